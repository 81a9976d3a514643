"""On-device sampling against csm_core.sampling (the numpy reference semantics), per-row parameters
and the counter-based per-row random streams (with a numpy twin of the hash)."""

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core")

from csm_core import sampling as ref  # noqa: E402
from csm_core.protocols import SamplingParams  # noqa: E402
from csm_mlx import sampling  # noqa: E402


def test_topk_mask_keeps_ties_like_numpy():
    logits = np.array([[3.0, 1.0, 2.0, 2.0, 2.0, -1.0], [0.5, 0.5, 0.5, 0.5, 0.1, 0.2]], np.float32)
    for k in (1, 2, 3, 6, 10):
        got = np.array(sampling.topk_mask(mx.array(logits), k))
        np.testing.assert_array_equal(got, ref.topk_mask(logits, k))


def test_exponential_race_with_injected_noise_matches_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 2051)).astype(np.float32)
    q = rng.exponential(size=logits.shape).astype(np.float32)
    probs_ref = ref.softmax(ref.topk_mask(ref.mask_undecodable(logits, 2048) / np.float32(0.7), 40))
    masked = sampling.prepare_logits(mx.array(logits), mx.array([2048] * 4))
    probs = mx.softmax(sampling.topk_mask(masked / 0.7, 40), axis=-1)
    np.testing.assert_allclose(np.array(probs), probs_ref, atol=1e-6)
    np.testing.assert_array_equal(np.array(sampling.exponential_race(probs, mx.array(q))), ref.exponential_race(probs_ref, q))


def _rows(params, seeds=None, counters=None):
    n = len(params)
    keys = sampling.frame_keys(seeds or [0] * n, [0] * n, counters or [0] * n)
    return sampling.RowSampling.build(params, keys, 2051)


def test_greedy_and_undecodable_mask():
    logits = np.zeros((2, 2051), np.float32)
    logits[0, 2050] = 5.0  # undecodable, masked away
    logits[0, 7] = 1.0
    logits[1, 2049] = 5.0
    greedy = SamplingParams(temperature=0)
    got = np.array(sampling.sample_rows(mx.array(logits), _rows([greedy] * 2), 0))
    np.testing.assert_array_equal(got, [7, 0])
    keep = SamplingParams(temperature=0, mask_undecodable=False)
    np.testing.assert_array_equal(np.array(sampling.sample_rows(mx.array(logits), _rows([keep] * 2), 0)), [2050, 2049])
    mixed = np.array(sampling.sample_rows(mx.array(logits), _rows([greedy, keep]), 0))  # per-row limits
    np.testing.assert_array_equal(mixed, [7, 2049])


def test_sampled_frequencies_follow_the_topk_distribution():
    logits = np.log(np.array([0.4, 0.3, 0.2, 0.05, 0.05], np.float32))
    n = 40000
    p = SamplingParams(temperature=1.0, topk=3)
    rows = sampling.RowSampling.build([p] * n, sampling.frame_keys([1] * n, [0] * n, range(n)), 5)
    draws = np.array(sampling.sample_rows(mx.array(np.tile(logits, (n, 1))), rows, 0))
    freq = np.bincount(draws, minlength=5) / n
    expect = np.array([4, 3, 2, 0, 0]) / 9
    assert freq[3] == freq[4] == 0
    chi2 = n * np.sum((freq[:3] - expect[:3]) ** 2 / expect[:3])
    assert chi2 < 13.8  # p = 0.001 with 2 degrees of freedom


def _fmix32(h):
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def np_row_uniforms(k0, k1, codebook, size):
    """numpy twin of sampling.row_uniforms."""
    idx = np.arange(codebook * size, (codebook + 1) * size, dtype=np.uint32)[None, :]
    h = _fmix32((idx * np.uint32(0x9E3779B1)) ^ k0[:, None])
    h = _fmix32(h ^ k1[:, None])
    return ((h >> np.uint32(9)) * np.uint32(2) + np.uint32(1)).astype(np.float32) * np.float32(2.0**-24)


def test_row_uniforms_match_numpy_twin_and_look_uniform():
    k0, k1 = sampling.frame_keys([3, 3, 2**70 + 5, -1], [0, 1, 0, 0], [0, 0, 9, 4])
    assert len(set(zip(k0.tolist(), k1.tolist()))) == 4
    for cb in (0, 31):
        got = np.array(sampling.row_uniforms(mx.array(k0), mx.array(k1), cb, 2051))
        np.testing.assert_array_equal(got, np_row_uniforms(k0, k1, cb, 2051))
    u = np.array(sampling.row_uniforms(mx.array(k0), mx.array(k1), 0, 100000))
    assert 0 < u.min() and u.max() < 1
    hist = np.histogram(u, bins=10, range=(0, 1))[0] / u.size
    assert np.abs(hist - 0.1).max() < 0.005 and abs(np.corrcoef(u[0], u[1])[0, 1]) < 0.01


def test_frame_keys_depend_only_on_seed_stream_and_counter():
    a = sampling.frame_keys([7, 8, 7], [0, 0, 0], [5, 5, 6])
    b = sampling.frame_keys([7], [0], [5])
    assert (a[0][0], a[1][0]) == (b[0][0], b[1][0])
    assert len({(int(x), int(y)) for x, y in zip(*a)}) == 3


def test_rows_with_different_params_sample_as_they_would_alone():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 2051)).astype(np.float32)
    params = [SamplingParams(0.9, 50), SamplingParams(0), SamplingParams(1.5, 3), SamplingParams(0.7, 2051)]
    seeds, counters = [1, 2, 3, 4], [0, 7, 2, 1]
    together = np.array(sampling.sample_rows(mx.array(logits), _rows(params, seeds, counters), 5))
    for i, p in enumerate(params):
        alone = sampling.sample_rows(mx.array(logits[i : i + 1]), _rows([p], [seeds[i]], [counters[i]]), 5)
        assert int(np.array(alone)[0]) == together[i]
        # and the numpy reference semantics with the same draws
        u = np_row_uniforms(*sampling.frame_keys([seeds[i]], [0], [counters[i]]), 5, 2051)
        lg = ref.mask_undecodable(logits[i : i + 1], 2048)
        if p.greedy:
            assert together[i] == np.argmax(lg)
        else:
            probs = ref.softmax(ref.topk_mask(lg / np.float32(p.temperature), p.topk))
            assert together[i] == ref.exponential_race(probs, -np.log(u))[0]
