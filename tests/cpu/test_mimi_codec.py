"""csm_cpu.mimi against the numpy codec (csm_audio.mimi), the reference: whole clip and streaming,
fp32 within 1e-5, bf16 within its stated cost; the same errors for bad input; the batched decoder
equal to one stream per row."""

from __future__ import annotations

import numpy as np
import pytest

from csm_core.config import mimi, mimi_tiny
from csm_core.protocols import AudioCodec, StreamingDecoder
from csm_core.testing.mimi import mimi_test_audio, random_mimi_weights
from csm_cpu.mimi import Mimi as CpuMimi

numpy_mimi = pytest.importorskip("csm_audio").Mimi


def _rel(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


@pytest.fixture(scope="module")
def tiny():
    cfg = mimi_tiny()
    w = random_mimi_weights(cfg, 5)
    return numpy_mimi(cfg, w), CpuMimi(cfg, w, threads=2), w


@pytest.fixture(scope="module")
def codes_30s():
    return np.random.default_rng(0).integers(0, 2048, (32, 375))  # 750 transformer steps: 3 windows


def test_protocols(tiny):
    _, ours, _ = tiny
    assert isinstance(ours, AudioCodec)
    assert isinstance(ours.streaming_decoder(), StreamingDecoder)
    assert (ours.sample_rate, ours.frame_size, ours.num_codebooks, ours.codebook_size) == (24000, 1920, 32, 2048)


@pytest.mark.parametrize("length", [1, 1920, 24000, 24961, 5 * 1920 + 7])
def test_encode_equals_numpy(tiny, length):
    ref, ours, _ = tiny
    audio = mimi_test_audio(length, seed=length)
    want, got = ref.encode_latent(audio), ours.encode_latent(audio)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max())
    for k in (1, 8, 32):
        assert np.array_equal(ours.encode(audio, k), ref.encode(audio, k))


@pytest.mark.parametrize("k", [1, 8, 32])
def test_decode_equals_numpy(tiny, k):
    ref, ours, _ = tiny
    codes = np.random.default_rng(k).integers(0, 2048, (k, 40))
    want, got = ref.decode(codes), ours.decode(codes)
    assert got.shape == want.shape == (40 * 1920,) and got.dtype == np.float32
    assert np.abs(got - want).max() <= 1e-5


def test_decode_30s_whole_and_one_frame_at_a_time(tiny, codes_30s):
    ref, ours, _ = tiny
    want = ref.decode(codes_30s)
    whole = ours.decode(codes_30s)
    assert np.abs(whole - want).max() <= 1e-5
    dec = ours.streaming_decoder()
    out = np.concatenate([dec.decode(codes_30s[:, t : t + 1]) for t in range(codes_30s.shape[1])])
    assert dec.frames == 375
    assert np.abs(out - want).max() <= 1e-5


def test_streaming_uneven_chunks_reset_and_empty(tiny, codes_30s):
    ref, ours, _ = tiny
    want = ref.decode(codes_30s[:, :260])
    dec = ours.streaming_decoder()
    edges = np.cumsum([0, 3, 1, 200, 0, 7, 49])
    out = np.concatenate([dec.decode(codes_30s[:, a:b]) for a, b in zip(edges[:-1], edges[1:])])
    assert np.abs(out - want).max() <= 1e-5
    dec.reset()
    assert dec.frames == 0
    assert np.abs(dec.decode(codes_30s[:, :2]) - want[: 2 * 1920]).max() <= 1e-5


def test_bf16_weights_cost(tiny, codes_30s):
    ref, _, w = tiny
    ours = CpuMimi(mimi_tiny(), w, fmt="bf16", threads=2)
    want = ref.decode(codes_30s[:, :50])
    got = ours.decode(codes_30s[:, :50])
    assert 1e-6 < _rel(got, want) < 2e-2  # bf16 weights (8-bit mantissa) do change the result, boundedly
    audio = mimi_test_audio(24000, seed=3)
    lat = ours.encode_latent(audio)
    assert _rel(lat, ref.encode_latent(audio)) < 2e-2


def test_same_errors_as_numpy(tiny):
    ref, ours, _ = tiny
    bad_inputs = [
        ("decode", np.full((32, 3), 2048)),
        ("decode", np.full((32, 3), -1)),
        ("decode", np.zeros((33, 3), np.int64)),
        ("decode", np.zeros((0, 3), np.int64)),
        ("decode", np.zeros(5, np.int64)),
        ("decode", np.zeros((4, 3), np.float32)),
        ("encode", np.array([0.0, np.nan, 0.1], np.float32)),
        ("encode", np.zeros((2, 100), np.float32)),
        ("encode", np.zeros(0, np.float32)),
        ("encode", np.zeros(100, np.int16)),
    ]
    for method, x in bad_inputs:
        with pytest.raises(ValueError) as want:
            getattr(ref, method)(x)
        with pytest.raises(ValueError) as got:
            getattr(ours, method)(x)
        assert str(got.value) == str(want.value)
        if method == "decode":
            with pytest.raises(ValueError) as got:
                ours.streaming_decoder().decode(x)
            assert str(got.value) == str(want.value)
    for k in (0, 33, 1.5, True):
        with pytest.raises(ValueError) as want:
            ref.encode(np.zeros(100, np.float32), k)
        with pytest.raises(ValueError) as got:
            ours.encode(np.zeros(100, np.float32), k)
        assert str(got.value) == str(want.value)
    with pytest.raises(ValueError, match="format"):
        CpuMimi(mimi_tiny(), tiny[2], fmt="q8_0")


def test_batch_decoder_rows_equal_single_streams(tiny, codes_30s):
    _, ours, _ = tiny
    rng = np.random.default_rng(7)
    streams = rng.integers(0, 2048, (3, 32, 12))
    bd = ours.batch_streaming_decoder(4)
    singles = [ours.streaming_decoder() for _ in range(3)]
    # rows advance together, a row joins late, one is reset and restarts
    a = bd.decode([0, 2], streams[[0, 2], :, 0:2])
    np.testing.assert_array_equal(a[0], singles[0].decode(streams[0, :, 0:2]))
    np.testing.assert_array_equal(a[1], singles[2].decode(streams[2, :, 0:2]))
    b = bd.decode([2, 1, 0], streams[[2, 1, 0], :, 2:3])
    assert b.shape == (3, 1920)
    np.testing.assert_array_equal(b[0], singles[2].decode(streams[2, :, 2:3]))
    np.testing.assert_array_equal(b[1], singles[1].decode(streams[1, :, 2:3]))
    np.testing.assert_array_equal(b[2], singles[0].decode(streams[0, :, 2:3]))
    bd.reset_row(0)
    singles[0].reset()
    c = bd.decode([0], streams[[0], :, 5:6])
    np.testing.assert_array_equal(c[0], singles[0].decode(streams[0, :, 5:6]))
    with pytest.raises(ValueError, match="row must be an integer from 0 to 3"):
        bd.decode([4], streams[[0], :, 0:1])
    with pytest.raises(ValueError, match="distinct"):
        bd.decode([1, 1], streams[[0, 1], :, 0:1])
    with pytest.raises(ValueError, match="out of range"):
        bd.decode([1], np.full((1, 32, 1), 4096))


@pytest.mark.slow
def test_full_size_equals_numpy_30s():
    """Full-size Mimi, random weights: 30 s decode (whole clip and one frame at a time) and a
    10.1 s encode against the numpy codec."""
    cfg = mimi()
    w = random_mimi_weights(cfg, 0)
    ref, ours = numpy_mimi(cfg, w), CpuMimi(cfg, w, threads=2)
    audio = mimi_test_audio(24000 * 10 + 1234, seed=1)
    codes = ref.encode(audio)
    lat_ref, lat = ref.encode_latent(audio), ours.encode_latent(audio)
    assert _rel(lat, lat_ref) <= 1e-5
    got = ours.encode(audio)
    assert (got == codes).mean() >= 0.999  # near-ties may flip (spec §9); q0 exactly
    assert np.array_equal(got[0], codes[0])
    codes_30s = np.random.default_rng(0).integers(0, 2048, (32, 375))
    want = ref.decode(codes_30s)
    assert _rel(ours.decode(codes_30s), want) <= 1e-5
    dec = ours.streaming_decoder()
    out = np.concatenate([dec.decode(codes_30s[:, t : t + 1]) for t in range(375)])
    assert _rel(out, want) <= 1e-5
    assert np.abs(out - want).max() <= 1e-5 * max(1.0, np.abs(want).max())
