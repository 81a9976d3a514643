"""Streaming decode equals whole-clip decode, past the 250-step attention window too."""

from __future__ import annotations

import numpy as np
import pytest

from csm_audio import Mimi
from csm_core.config import mimi_tiny
from csm_core.protocols import AudioCodec, StreamingDecoder
from csm_core.testing.mimi import random_mimi_weights


@pytest.fixture(scope="module")
def model():
    cfg = mimi_tiny()
    return Mimi(cfg, random_mimi_weights(cfg, 5))


@pytest.fixture(scope="module")
def codes_30s():
    return np.random.default_rng(0).integers(0, 2048, (32, 375))  # 750 transformer steps


@pytest.fixture(scope="module")
def whole_30s(model, codes_30s):
    return model.decode(codes_30s)


def test_implements_protocols(model):
    assert isinstance(model, AudioCodec)
    assert isinstance(model.streaming_decoder(), StreamingDecoder)
    assert (model.sample_rate, model.frame_size, model.num_codebooks, model.codebook_size) == (24000, 1920, 32, 2048)


def test_one_frame_at_a_time_30s(model, codes_30s, whole_30s):
    dec = model.streaming_decoder()
    out = [dec.decode(codes_30s[:, t : t + 1]) for t in range(codes_30s.shape[1])]
    assert all(o.shape == (1920,) for o in out)
    assert dec.frames == 375
    assert np.abs(np.concatenate(out) - whole_30s).max() <= 1e-5


def test_uneven_chunks_and_reset(model, codes_30s, whole_30s):
    dec = model.streaming_decoder()
    sizes = [3, 1, 200, 7, 1, 130, 33]  # crosses the window with multi-frame chunks of any size
    assert sum(sizes) == codes_30s.shape[1]
    edges = np.cumsum([0] + sizes)
    out = np.concatenate([dec.decode(codes_30s[:, a:b]) for a, b in zip(edges[:-1], edges[1:])])
    assert np.abs(out - whole_30s).max() <= 1e-5
    dec.reset()
    assert dec.frames == 0
    np.testing.assert_allclose(dec.decode(codes_30s[:, :4]), whole_30s[: 4 * 1920], atol=1e-5, rtol=0)


def test_empty_chunk_keeps_state(model, codes_30s, whole_30s):
    dec = model.streaming_decoder()
    a = dec.decode(codes_30s[:, :2])
    assert dec.decode(codes_30s[:, :0]).shape == (0,)
    b = dec.decode(codes_30s[:, 2:3])
    np.testing.assert_allclose(np.concatenate([a, b]), whole_30s[: 3 * 1920], atol=1e-5, rtol=0)


def test_whole_clip_decode_does_not_depend_on_clip_length(model, codes_30s, whole_30s):
    # causal: the first 100 frames decode the same whether or not more follow
    np.testing.assert_allclose(model.decode(codes_30s[:, :100]), whole_30s[: 100 * 1920], atol=1e-5, rtol=0)


@pytest.mark.parametrize("length", [1, 1000, 24_000, 24_960, 3 * 1920 + 7, 252_000])
def test_streaming_encode_equals_whole_clip(model, length):
    from csm_core.testing.mimi import mimi_test_audio

    audio = mimi_test_audio(length, seed=4)
    whole = model.encode(audio, num_codebooks=8)
    enc = model.streaming_encoder(num_codebooks=8)
    rng = np.random.default_rng(length)
    parts, i = [], 0
    while i < length:  # chunks of any size, not aligned to frames
        n = int(rng.integers(1, 5000))
        parts.append(enc.encode(audio[i : i + n]))
        i += n
    parts.append(enc.flush())
    assert all(p.shape[0] == 8 for p in parts)
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), whole)
    # flush resets: the encoder can start a new stream
    np.testing.assert_array_equal(np.concatenate([enc.encode(audio[:5000]), enc.flush()], 1), model.encode(audio[:5000], 8))
