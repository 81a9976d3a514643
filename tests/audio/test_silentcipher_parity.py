"""SilentCipher in numpy vs the `silentcipher` package (PyPI 1.0.5, torch) on random networks of
the exact architecture saved as released-style checkpoint files (tools/make_silentcipher_reference.py).

- full size (the 44.1 kHz model's config): embedded audio through the official watermark() path
  within 1e-4 relative L2; dec_m's per-frame classes and the decode answer identical;
- a planted message decoder in both (the loudest of 5 bins names the class): the whole official
  verify() path at full size, 205 phase shifts, for 1 s, 7.3 s and 30 s clips at 24 and 44.1 kHz;
- a tiny STFT config (n_fft 64): the real networks with phase-shift decoding, and verify of one
  side's embed by the other.
The 7.3 s and 30 s cases, and the message decoder at 44.1 kHz, are in the slow group (the full-size
networks cost ~100 GFLOP per second of audio per decoder pass, in both implementations).
"""

from __future__ import annotations

import numpy as np
import pytest

from csm_audio.watermark import silentcipher as sc

from silentcipher_helpers import PLANTED_BINS, load_tool, planted_classes, planted_clip, speechy

pytestmark = pytest.mark.reference
torch = pytest.importorskip("torch")
try:
    load_tool().import_silentcipher()  # librosa / pydub, imported but unused on this path, stubbed if missing
except ImportError as e:
    pytest.skip(f"the silentcipher package is not installed ({e})", allow_module_level=True)

KEY = list(sc.CSM_1B_KEY)


def rel_l2(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def tool():
    return load_tool()


@pytest.fixture(scope="module")
def full(tool, tmp_path_factory):
    d = tool.build_reference(tmp_path_factory.mktemp("sc_full"), seed=0)
    return d, sc.load(d), tool.load_official(d)


@pytest.fixture(scope="module")
def tiny(tool, tmp_path_factory):
    d = tool.build_reference(tmp_path_factory.mktemp("sc_tiny"), seed=3, small=True)
    return d, sc.load(d), tool.load_official(d)


def _official(tool, ref_model):
    # the STFT is a process-wide singleton in the package: rebuild it for this model's config
    from silentcipher.stft import STFT, Singleton

    Singleton._instances.clear()
    ref_model.stft = STFT(ref_model.config.N_FFT, ref_model.config.HOP_LENGTH)
    return ref_model


def test_checkpoint_tensors_load_unchanged(full):
    d, ours, ref = full
    w = ref.dec_m[0].state_dict()
    conv = [k for k in w if k.endswith("conv.weight")]
    assert len(conv) == len(ours.w.dec_m) == 10
    # dec_m's second gated layer: torch [Cout, Cin, 3, 3] -> our im2col [(kh, kw, Cin), Cout] conv half
    t = w[conv[1]].numpy()
    np.testing.assert_array_equal(ours.w.dec_m[1].w[:, :128], t.transpose(2, 3, 1, 0).reshape(-1, 128))
    assert ours.cfg.N_FFT == ref.config.N_FFT and ours.cfg.message_band_size == ref.config.message_band_size


@pytest.mark.parametrize("sr", [24000, 44100])
@pytest.mark.parametrize("seconds", [1.0, pytest.param(7.3, marks=pytest.mark.slow), pytest.param(30.0, marks=pytest.mark.slow)])
def test_embed_matches_official_watermark(tool, full, sr, seconds):
    _, ours, ref = full
    x = speechy(int(seconds * sr), sr, seed=int(seconds))
    mine = sc.embed(x, sr, sc.CSM_1B_KEY, ours)
    theirs = tool.official_watermark(_official(tool, ref), x, sr)
    assert mine.shape == x.shape and mine.dtype == np.float32
    assert len(theirs) >= len(x)
    err = rel_l2(mine, theirs[: len(x)])
    assert err <= 1e-4, err
    assert rel_l2(mine, x) > 1e-3  # it did mark


@pytest.mark.parametrize("sr", [24000, pytest.param(44100, marks=pytest.mark.slow)])
@pytest.mark.parametrize("seconds", [1.0, pytest.param(7.3, marks=pytest.mark.slow)])
def test_message_decoder_matches(tool, full, sr, seconds):
    """dec_m's per-frame classes and decode_wav's answer (phase shift 0: one full-size pass)."""
    _, ours, ref = full
    x = speechy(int(seconds * sr), sr, seed=7)
    marked = sc.embed(x, sr, sc.CSM_1B_KEY, ours)
    y = tool.torch_resample(marked, sr, 44100).numpy()
    ref = _official(tool, ref)
    with torch.inference_mode():
        theirs = ref.decode_wav(y, 44100, phase_shift_decoding=False)
        yn = y * np.sqrt(sc.model.AVERAGE_ENERGY / np.mean(y**2))
        carrier, _ = ref.stft.transform(torch.FloatTensor(yn)[None])
        ref_classes = torch.argmax(ref.dec_m[0](carrier[:, None])[0, 0], dim=0).numpy()
    mine = sc.decode(marked, sr, ours, phase_shift_decoding=False)
    ours_classes = ours._frame_classes(yn.astype(np.float32))
    np.testing.assert_array_equal(ours_classes, ref_classes)
    assert mine.status == theirs["status"]
    assert mine.messages == theirs["messages"] and mine.confidences == theirs["confidences"]


def _plant(tool, ours, ref):
    ours._frame_classes = planted_classes(ours)

    class Planted(torch.nn.Module):
        def forward(self, carrier):  # [1, 1, F, T] -> [1, 1, 5, T]
            return carrier[:, :, torch.as_tensor(PLANTED_BINS)]

    ref = _official(tool, ref)
    ref.dec_m = [Planted()]
    return ours, ref


@pytest.mark.parametrize("sr", [24000, 44100])
@pytest.mark.parametrize("seconds", [1.0, pytest.param(7.3, marks=pytest.mark.slow), pytest.param(30.0, marks=pytest.mark.slow)])
def test_verify_path_matches_with_planted_decoder(tool, tmp_path, sr, seconds):
    """The official verify() at full size (205 phase shifts) on a clip carrying the key, delayed so
    the best shift is not 0, and on one without it."""
    d = tool.build_reference(tmp_path, seed=1, small=False)  # networks unused: only the config matters here
    ours, ref = _plant(tool, sc.load(d), tool.load_official(d))
    marked = planted_clip(seconds, delay=1100 if seconds > 2 else 0)  # best shift 80 at 44.1 kHz (1 s: one row, no room)
    other_key = planted_clip(seconds, key=bytes([1, 2, 3, 4, 5]), delay=300, seed=1)
    unmarked = speechy(len(marked), 44100, seed=2)
    for clip44 in (marked, other_key, unmarked):
        clip = sc.sinc_resample(clip44, 44100, sr)
        theirs = tool.official_decode(ref, clip, sr)
        mine = sc.decode(clip, sr, ours)
        assert (mine.status, mine.messages, mine.confidences) == (theirs["status"], theirs["messages"], theirs["confidences"])
        assert tool.official_verify(ref, clip, sr) == sc.verify(clip, sr, model=ours).found
    assert sc.verify(sc.sinc_resample(marked, 44100, sr), sr, model=ours).found
    assert not sc.verify(sc.sinc_resample(other_key, 44100, sr), sr, model=ours).found


@pytest.mark.parametrize("seconds", [0.2, 0.45])
def test_tiny_networks_phase_shift_decoding_matches(tool, tiny, seconds):
    """The real (random) networks with the whole phase-shift search (tiny STFT: 4 shifts)."""
    _, ours, ref = tiny
    ref = _official(tool, ref)
    x = speechy(int(seconds * 44100), 44100, seed=11)
    for clip in (x, sc.embed(x, 44100, sc.CSM_1B_KEY, ours)):
        with torch.inference_mode():
            theirs = ref.decode_wav(clip, 44100, phase_shift_decoding=True)
        mine = sc.decode(clip, 44100, ours)
        assert (mine.status, mine.messages, mine.confidences) == (theirs["status"], theirs["messages"], theirs["confidences"])


def test_tiny_verify_agrees_both_ways(tool, tiny):
    _, ours, ref = tiny
    ref = _official(tool, ref)
    x = speechy(int(0.3 * 24000), 24000, seed=5)
    mine = sc.embed(x, 24000, sc.CSM_1B_KEY, ours)
    theirs = tool.official_watermark(ref, x, 24000)[: len(x)]
    assert rel_l2(mine, theirs) <= 1e-4
    assert sc.verify(theirs, 24000, model=ours).found == tool.official_verify(ref, theirs, 24000)
    assert tool.official_verify(ref, mine, 24000) == sc.verify(mine, 24000, model=ours).found
    assert not sc.verify(x, 24000, model=ours).found and not tool.official_verify(ref, x, 24000)


def test_foreign_torch_checkpoint_is_refused(tmp_path, full):
    d, _, _ = full
    for f in ("hparams.yaml", "enc_c.ckpt", "dec_c.ckpt"):
        (tmp_path / f).write_bytes((d / f).read_bytes())
    torch.save({"encoder.weight": torch.zeros(3, 3)}, tmp_path / "dec_m_0.ckpt")
    with pytest.raises(sc.checkpoint.CheckpointError, match=r"dec_m_0.ckpt.*gated layers"):
        sc.load(tmp_path)
    torch.save(torch.load(d / "enc_c.ckpt"), tmp_path / "dec_m_0.ckpt")  # the wrong network's file
    with pytest.raises(sc.checkpoint.CheckpointError, match=r"dec_m_0.ckpt"):
        sc.load(tmp_path)
