"""On-device sampling against csm_core.sampling (the numpy reference semantics)."""

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
    p = SamplingParams(temperature=0.7, topk=40)
    probs_ref = ref.softmax(ref.topk_mask(ref.mask_undecodable(logits, 2048) / np.float32(0.7), 40))
    masked = sampling.prepare_logits(mx.array(logits), p)
    probs = mx.softmax(sampling.topk_mask(masked / 0.7, 40), axis=-1)
    np.testing.assert_allclose(np.array(probs), probs_ref, atol=1e-6)
    np.testing.assert_array_equal(np.array(sampling.exponential_race(probs, mx.array(q))), ref.exponential_race(probs_ref, q))


def test_greedy_and_undecodable_mask():
    logits = np.zeros((2, 2051), np.float32)
    logits[0, 2050] = 5.0  # undecodable, masked away
    logits[0, 7] = 1.0
    logits[1, 2049] = 5.0
    got = np.array(sampling.sample(mx.array(logits), SamplingParams(temperature=0), None))
    np.testing.assert_array_equal(got, [7, 0])
    keep = np.array(sampling.sample(mx.array(logits), SamplingParams(temperature=0, mask_undecodable=False), None))
    np.testing.assert_array_equal(keep, [2050, 2049])
    with pytest.raises(ValueError, match="random key"):
        sampling.sample(mx.array(logits), SamplingParams(temperature=1.0), None)


def test_sampled_frequencies_follow_the_topk_distribution():
    logits = np.log(np.array([0.4, 0.3, 0.2, 0.05, 0.05], np.float32))
    n = 40000
    draws = np.array(sampling.sample(mx.array(np.tile(logits, (n, 1))), SamplingParams(temperature=1.0, topk=3), mx.random.key(1)))
    freq = np.bincount(draws, minlength=5) / n
    expect = np.array([4, 3, 2, 0, 0]) / 9
    assert freq[3] == freq[4] == 0
    chi2 = n * np.sum((freq[:3] - expect[:3]) ** 2 / expect[:3])
    assert chi2 < 13.8  # p = 0.001 with 2 degrees of freedom
