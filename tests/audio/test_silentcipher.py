"""SilentCipher in numpy without the reference: message layout, resampler, STFT, decoding path
(with a planted message decoder), files and bad input. Parity with the `silentcipher` package
is in test_silentcipher_parity.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

from csm_audio.watermark import silentcipher as sc
from csm_audio.watermark.silentcipher.checkpoint import CheckpointError, FILES, SUBDIR, load_config
from csm_audio.watermark.silentcipher.model import _bytes_from_symbols, _row_agreement, key_symbols
from csm_audio.watermark.silentcipher.stft import Stft

from silentcipher_helpers import TINY, planted_classes, planted_clip, random_model, speechy

FULL = sc.SilentCipherConfig()


@pytest.fixture(scope="module")
def tiny():
    return random_model(TINY, seed=0)


@pytest.fixture(scope="module")
def planted():
    m = random_model(FULL, seed=0)
    m._frame_classes = planted_classes(m)
    return m


def test_key_symbols_round_trip():
    syms = key_symbols(sc.CSM_1B_KEY, FULL)
    assert len(syms) == 20 and syms.min() >= 0 and syms.max() <= 3
    assert syms[:4].tolist() == [3, 1, 1, 0]  # 212 = 0b11010100, MSB first
    assert _bytes_from_symbols(syms.tolist()) == list(sc.CSM_1B_KEY)
    with pytest.raises(ValueError, match="5 bytes"):
        key_symbols(b"\x01\x02", FULL)


def test_stray_terminator_is_not_bytes():
    with pytest.raises(ValueError):
        _bytes_from_symbols([0, -1] + [1] * 18)  # '00-1...' is not base 2


def test_row_agreement():
    rows = np.array([[1, 2, 3], [1, 2, 4], [1, 0, 4], [1, 2, 4]])
    assert _row_agreement(rows) == pytest.approx((1 + 0.75 + 0.75) / 3)
    assert _row_agreement(rows[:1]) == 1.0


@pytest.mark.parametrize("rates", [(24000, 44100), (44100, 24000), (16000, 44100), (48000, 44100)])
def test_sinc_resample_length_and_tone(rates):
    a, b = rates
    n = a  # 1 s
    t = np.arange(n) / a
    y = sc.sinc_resample(np.sin(2 * np.pi * 1000 * t).astype(np.float32), a, b)
    assert len(y) == math.ceil(b * n / a) and y.dtype == np.float32
    ref = np.sin(2 * np.pi * 1000 * np.arange(len(y)) / b)
    mid = slice(len(y) // 10, -len(y) // 10)
    assert np.max(np.abs(y[mid] - ref[mid])) < 2e-3


def test_stft_inverse_reconstructs():
    st = Stft(4096, 2048)
    x = speechy(50000, 44100)
    mag, ph = st.transform(x)
    assert mag.shape == (st.frames(len(x)), 2049)
    np.testing.assert_allclose(st.inverse(mag, ph, len(x)), x, atol=2e-6)


def test_embed_is_quiet_and_keeps_shape(tiny):
    x = speechy(12000, 24000)
    y = sc.embed(x, 24000, sc.CSM_1B_KEY, tiny)
    assert y.shape == x.shape and y.dtype == np.float32
    sdr = 20 * np.log10(np.linalg.norm(x) / np.linalg.norm(x - y))
    assert 28 < sdr < 50, sdr
    assert np.array_equal(sc.embed(np.zeros(12000, np.float32), 24000, model=tiny), np.zeros(12000, np.float32))


def test_embed_integer_and_high_rate_input(tiny):
    x = (speechy(20000, 48000) * 32767).astype(np.int16)
    y = sc.embed(x, 48000, sc.CSM_1B_KEY, tiny)
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.max(np.abs(y - x / 32768)) < 0.05


def test_planted_key_is_verified_at_any_shift(planted):
    for delay, shift in ((0, 0), (1100, 80)):
        clip = planted_clip(2.5, delay=delay)
        d = sc.decode(clip, 44100, planted)
        assert d.status and d.messages == [list(sc.CSM_1B_KEY)] and d.confidences == [1.0]
        assert d.phase_shift == shift and d.offsets_tried == shift // 10 + 1
        r = sc.verify(sc.sinc_resample(clip, 44100, 24000), 24000, model=planted)
        assert r.found and r.payload == int.from_bytes(sc.CSM_1B_KEY, "big") and r.score == 1.0
    other = planted_clip(2.5, key=bytes([9, 8, 7, 6, 5]))
    r = sc.verify(other, 44100, model=planted)
    assert not r.found and r.payload == 0x0908070605 and "not the key" in r.reason
    assert sc.verify(other, 44100, key=[9, 8, 7, 6, 5], model=planted).found


def test_early_stop_equals_exhaustive_search(planted):
    """A perfect agreement cannot be beaten, so stopping there picks the official shift: check
    against every shift tried on a clip whose best is not 0, and one where none is perfect."""
    for clip in (planted_clip(2.2, delay=1100), speechy(2 * 44100, 44100, seed=3)):
        y = (clip * np.sqrt(sc.model.AVERAGE_ENERGY / np.mean(clip**2))).astype(np.float32)
        best, best_acc = 0, 0.0
        for ps in range(0, 2048, 10):
            acc = _row_agreement(planted._rows(planted._frame_classes(y[ps:])))
            if acc > best_acc:
                best, best_acc = ps, acc
        d = sc.decode(clip, 44100, planted)
        assert (d.phase_shift, d.accuracy) == (best, best_acc)


def test_unmarked_and_short_clips_are_not_found(tiny, planted):
    r = sc.verify(speechy(3 * 44100, 44100), 44100, model=planted)
    assert not r.found and r.reason and r.details["offsets_tried"] == 205
    short = sc.verify(speechy(20000, 24000), 24000, model=planted)
    assert not short.found and "too short" in short.reason
    silent = sc.verify(np.zeros(60000, np.float32), 24000, model=planted)
    assert not silent.found and "silent" in silent.reason


def test_bad_input_is_named(tiny):
    x = speechy(12000, 24000)
    with pytest.raises(ValueError, match="NaN"):
        sc.embed(np.where(np.arange(12000) == 5, np.nan, x), 24000, model=tiny)
    with pytest.raises(ValueError, match="NaN"):
        sc.verify(np.full(12000, np.inf, np.float32), 24000, model=tiny)
    with pytest.raises(ValueError, match="mono"):
        sc.embed(np.stack([x, x], 1), 24000, model=tiny)
    for rate in (0, -1, 24000.0, "24000", True):
        with pytest.raises(ValueError, match="sample_rate"):
            sc.embed(x, rate, model=tiny)
    with pytest.raises(ValueError, match="8000"):
        sc.verify(x, 4000, model=tiny)
    with pytest.raises(ValueError, match="5 bytes"):
        sc.embed(x, 24000, key=[1, 2, 3], model=tiny)
    with pytest.raises(ValueError, match="no model"):
        sc.embed(x, 24000)
    full = random_model(FULL, 1)
    with pytest.raises(ValueError, match="too short"):
        sc.embed(speechy(12000, 24000), 24000, model=full)  # 0.5 s < one 21-frame message


def _fake_files(d):
    d.mkdir(parents=True, exist_ok=True)
    for f in FILES:
        (d / f).write_text("x")
    return d


def test_find_checkpoint_dir_layouts(tmp_path):
    direct = _fake_files(tmp_path / "direct")
    assert sc.find_checkpoint_dir(direct)[0] == direct
    snap = tmp_path / "snap"
    _fake_files(snap / SUBDIR)
    assert sc.find_checkpoint_dir(snap)[0] == snap / SUBDIR
    cache = tmp_path / "hub"
    _fake_files(cache / "models--sony--silentcipher" / "snapshots" / "abc" / SUBDIR)
    found, looked = sc.find_checkpoint_dir(None, cache)
    assert found == cache / "models--sony--silentcipher" / "snapshots" / "abc" / SUBDIR
    assert sc.find_checkpoint_dir(None, tmp_path / "empty")[0] is None


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(sc.SilentCipherNotFound, match=r"not found; looked in:(.|\n)*huggingface-cli download sony/silentcipher"):
        sc.load(tmp_path)
    d = _fake_files(tmp_path / "bad")
    (d / "hparams.yaml").write_text("SR: 44100\n")
    with pytest.raises(CheckpointError, match=r"hparams.yaml: not a SilentCipher hparams file: missing \['N_FFT'"):
        sc.load(d)
    (d / "hparams.yaml").write_text("SR: 44100\nN_FFT: 4096\nHOP_LENGTH: 2048\nmessage_dim: 5\nmessage_len: 21\n"
                                    "message_band_size: 1024\nmodel_type: 44.1k\n")
    assert load_config(d / "hparams.yaml") == FULL
    with pytest.raises(CheckpointError, match=r"enc_c.ckpt: not a zip-format PyTorch checkpoint"):
        sc.load(d)


def _naive_block(x, cw, cb, gw, gb, gamma, beta):
    """conv3x3 * sigmoid(gate3x3) then training-mode BatchNorm, written out in float64 ([T, F, C])."""
    k = cw.shape[2]
    p = k // 2
    xp = np.pad(x.astype(np.float64), ((p, p), (p, p), (0, 0)))
    t, f = x.shape[:2]

    def conv(w, b):
        out = np.zeros((t, f, w.shape[0])) + b
        for i in range(k):  # kernel rows run over bins, columns over frames
            for j in range(k):
                out += np.einsum("tfc,oc->tfo", xp[j : j + t, i : i + f], w[:, :, i, j])
        return out

    y = conv(cw, cb) / (1 + np.exp(-conv(gw, gb)))
    mean, var = y.mean((0, 1)), y.var((0, 1))
    return (y - mean) / np.sqrt(var + 1e-5) * gamma + beta


@pytest.mark.parametrize("k, shape", [(3, (5, 7, 3)), (3, (1, 4, 2)), (1, (6, 3, 5))])
def test_gated_blocks_match_naive_twin(k, shape):
    from csm_audio.watermark.silentcipher.nets import GatedLayer, fold_dec_c_input, run_stack

    rng = np.random.default_rng(k)
    t, f, cin = shape
    x = rng.standard_normal(shape).astype(np.float32)
    layers, naive = [], x
    for cout in (4, 2):
        p = [rng.standard_normal((cout, cin, k, k)).astype(np.float32), rng.standard_normal(cout).astype(np.float32),
             rng.standard_normal((cout, cin, k, k)).astype(np.float32), rng.standard_normal(cout).astype(np.float32),
             rng.uniform(0.5, 1.5, cout), rng.standard_normal(cout)]
        layers.append(GatedLayer.from_torch(*p))
        naive = _naive_block(naive, *p)
        cin = cout
    np.testing.assert_allclose(run_stack(x, layers), naive, rtol=1e-4, atol=1e-4)
    # dec_c's first layer sees [enc (2 ch), a plane x3, another plane x3]: folding sums the copies
    plane_a, plane_b = rng.standard_normal((t, f, 1)), rng.standard_normal((t, f, 1))
    wide = np.concatenate([x[:, :, :2], np.repeat(plane_a, 3, 2), np.repeat(plane_b, 3, 2)], 2).astype(np.float32)
    p = [rng.standard_normal((3, 8, 3, 3)).astype(np.float32), np.zeros(3, np.float32),
         rng.standard_normal((3, 8, 3, 3)).astype(np.float32), np.zeros(3, np.float32), np.ones(3), np.zeros(3)]
    full = GatedLayer.from_torch(*p)
    narrow = np.concatenate([x[:, :, :2], plane_a, plane_b], 2).astype(np.float32)
    np.testing.assert_allclose(run_stack(narrow, [fold_dec_c_input(full, (2, 3, 3))]), run_stack(wide, [full]),
                               rtol=1e-4, atol=1e-4)
