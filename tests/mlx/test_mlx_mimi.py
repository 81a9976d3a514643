"""Mimi in MLX (tiny config, fp32) against the transformers oracle fixture and csm-audio's numpy Mimi;
streaming decode against whole-clip decode, across the 250-step attention window."""

import json

import numpy as np
import pytest

pytest.importorskip("mlx.core")

from csm_core.config import MimiConfig, mimi_tiny  # noqa: E402
from csm_core.testing.mimi import mimi_test_audio, random_mimi_weights  # noqa: E402
from csm_core.weights import CheckpointError  # noqa: E402
from csm_mlx.mimi import MlxMimi  # noqa: E402


@pytest.fixture(scope="module")
def oracle():
    from csm_core.testing.csm import fixtures_dir

    path = fixtures_dir() / "mimi_tiny_oracle.npz"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def codec(oracle):
    cfg = MimiConfig.from_dict(json.loads(str(oracle["config_json"])))
    return MlxMimi(cfg, random_mimi_weights(cfg, int(oracle["seed"])))


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("case", ["short", "exact"])  # 24000 and 24960 samples: not / a multiple of 1920
def test_encode_matches_oracle(oracle, codec, case):
    st = codec.encode_stages(oracle[f"audio_{case}"])
    for ours, ref in (("seanet", "seanet"), ("transformer", "enc_transformer"), ("latent", "latent")):
        r = oracle[f"{ref}_{case}"]
        assert _rel(st[ours], r) <= 1e-5 and np.abs(st[ours] - r).max() <= 1e-4 * np.abs(r).max(), ours
    codes = codec.encode(oracle[f"audio_{case}"])
    assert codes.dtype == np.int64 and codes.shape == oracle[f"codes32_{case}"].shape
    np.testing.assert_array_equal(codes, oracle[f"codes32_{case}"])
    np.testing.assert_array_equal(codec.encode(oracle[f"audio_{case}"], num_codebooks=8), oracle[f"codes8_{case}"])


@pytest.mark.parametrize("case,k", [("short", 1), ("exact", 8), ("short", 32), ("long", 32)])
def test_decode_matches_oracle(oracle, codec, case, k):
    st = codec.decode_stages(oracle[f"codes{k}_{case}"])
    ref = oracle[f"decoded{k}_{case}"] if f"decoded{k}_{case}" in oracle else None
    if k == 32:
        tr = oracle[f"dec_transformer32_{case}"]
        assert np.abs(st["transformer"] - tr).max() <= 1e-4 * np.abs(tr).max()
    if ref is not None:
        assert st["audio"].shape == ref.shape
        assert _rel(st["audio"], ref) <= 1e-5
    np.testing.assert_array_equal(codec.decode(oracle[f"codes{k}_{case}"]), st["audio"])


def test_decode_equals_numpy_mimi(oracle, codec):
    csm_audio = pytest.importorskip("csm_audio.mimi")
    ref = csm_audio.Mimi(codec.config, random_mimi_weights(codec.config, int(oracle["seed"])))
    for k in (1, 8, 32):
        codes = oracle["codes32_exact"][:k]
        assert np.abs(codec.decode(codes) - ref.decode(codes)).max() <= 1e-5, k


def test_streaming_equals_whole_clip_past_the_window(oracle, codec):
    codes = oracle["codes32_long"]  # 132 frames = 264 transformer steps > the 250-step window
    whole = codec.decode(codes)
    dec = codec.streaming_decoder()
    chunks, t = [], 0
    for n in [60, 1, 3, 57, 1, 1, 1, 1, 1, 1, 5]:  # single frames around frame 125 (step 250)
        chunks.append(dec.decode(codes[:, t : t + n]))
        t += n
    assert t == codes.shape[1] and dec.frames == t
    assert all(c.shape == (n * 1920,) for c, n in zip(chunks, [60, 1, 3, 57, 1, 1, 1, 1, 1, 1, 5]))
    assert np.abs(np.concatenate(chunks) - whole).max() <= 1e-5
    dec.reset()
    np.testing.assert_allclose(dec.decode(codes[:, :3]), whole[: 3 * 1920], atol=1e-6)


def test_bad_input_is_rejected(codec):
    with pytest.raises(ValueError, match="out of range"):
        codec.decode(np.full((32, 2), 2048))
    with pytest.raises(ValueError, match="codebooks"):
        codec.decode(np.zeros((33, 2), np.int64))
    with pytest.raises(ValueError, match="empty"):
        codec.encode(np.zeros(0, np.float32))
    with pytest.raises(ValueError, match="num_codebooks"):
        codec.encode(mimi_test_audio(1920), num_codebooks=0)
    cfg = mimi_tiny()
    w = random_mimi_weights(cfg, 0)
    del w["decoder.model.0.conv.conv.bias"]
    with pytest.raises(CheckpointError, match="decoder.model.0.conv.conv.bias"):
        MlxMimi(cfg, w)


def test_implements_the_codec_protocols(codec):
    from csm_core.protocols import AudioCodec, StreamingDecoder

    assert isinstance(codec, AudioCodec) and isinstance(codec.streaming_decoder(), StreamingDecoder)
    assert (codec.sample_rate, codec.frame_size, codec.num_codebooks, codec.codebook_size) == (24000, 1920, 32, 2048)


@pytest.mark.slow
def test_full_size_matches_numpy_mimi():
    """Released Mimi dimensions, random weights: MLX vs csm-audio's numpy Mimi, encode and decode."""
    csm_audio = pytest.importorskip("csm_audio.mimi")
    from csm_core.config import mimi

    cfg = mimi()
    w = random_mimi_weights(cfg, 1)
    ours, ref = MlxMimi(cfg, w), csm_audio.Mimi(cfg, w)
    audio = mimi_test_audio(2 * 24000 + 700, seed=2)
    a, b = ours.encode_stages(audio), ref.encode_stages(audio)
    assert _rel(a["latent"], b["latent"]) <= 1e-5
    codes = ref.encode(audio)
    assert np.mean(ours.encode(audio) == codes) >= 0.99  # near-ties may flip deep in the residual
    assert np.abs(ours.decode(codes) - ref.decode(codes)).max() <= 1e-5 * max(1.0, np.abs(ref.decode(codes)).max())


def test_batch_streaming_decoder_rows_equal_their_own_decode(oracle, codec):
    """Three rows advanced together in calls over changing subsets of rows (in any order) with
    changing chunk lengths; one row runs past the 250-step window, one is reset and restarted:
    each row's output equals the decode of its own stream (≤ 1e-5)."""
    from csm_core.protocols import BatchStreamingDecoder

    rng = np.random.default_rng(0)
    streams = [oracle["codes32_long"], rng.integers(0, 2048, (32, 40)), rng.integers(0, 2048, (32, 60))]
    restart = rng.integers(0, 2048, (32, 30))
    dec = codec.batch_streaming_decoder(3)
    assert isinstance(dec, BatchStreamingDecoder) and dec.rows == 3
    for r in range(3):
        dec.reset_row(r)
    done, out = [0, 0, 0], [[], [], []]
    calls = [([0, 1, 2], 5), ([2, 0], 1), ([1], 7), ([0, 1, 2], 3), ([0], 110), ([2, 1], 4), ([0, 2], 1), ([0, 1, 2], 2)]
    calls += [([0], 1)] * 6 + [([0, 2], 3), ([1], 9), ([0, 2, 1], 1)]  # row 0: single frames over step 250
    for i, (rows, f) in enumerate(calls):
        if i == 9:  # row 1 ends its stream; a new one starts there
            np.testing.assert_allclose(np.concatenate(out[1]), codec.decode(streams[1][:, : done[1]]), atol=1e-5)
            dec.reset_row(1)
            streams[1], done[1], out[1] = restart, 0, []
        codes = np.stack([streams[r][:, done[r] : done[r] + f] for r in rows])
        audio = dec.decode(rows, codes)
        assert audio.shape == (len(rows), f * 1920) and audio.dtype == np.float32
        for r, a in zip(rows, audio):
            out[r].append(a)
            done[r] += f
    assert done[0] == 132 and dec.frames(0) == 132  # 264 transformer steps > the 250-step window
    for r in range(3):
        want = codec.decode(streams[r][:, : done[r]])
        assert np.abs(np.concatenate(out[r]) - want).max() <= 1e-5, r


def test_batch_streaming_decoder_rejects_bad_input(codec):
    dec = codec.batch_streaming_decoder(2)
    ok = np.zeros((1, 32, 2), np.int64)
    with pytest.raises(ValueError, match=r"rows must be integers in \[0, 2\), got 2"):
        dec.decode([2], ok)
    with pytest.raises(ValueError, match="rows must be distinct"):
        dec.decode([0, 0], np.zeros((2, 32, 2), np.int64))
    with pytest.raises(ValueError, match=r"codes must be an integer array \[n=2 rows"):
        dec.decode([0, 1], ok)
    with pytest.raises(ValueError, match="out of range"):
        dec.decode([1], np.full((1, 32, 2), 2048))
    with pytest.raises(ValueError, match="rows must be an integer >= 1"):
        codec.batch_streaming_decoder(0)
    assert dec.frames(0) == dec.frames(1) == 0  # nothing was decoded
    assert dec.decode([1], np.zeros((1, 32, 0), np.int64)).shape == (1, 0)
