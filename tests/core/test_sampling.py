"""csm_core.sampling: the numpy reference every backend's sampler must match (spec/csm.md §2)."""

import numpy as np
import pytest

from csm_core.protocols import SamplingParams
from csm_core.sampling import exponential_race, mask_undecodable, sample, softmax, topk_mask


def _tied_logits() -> np.ndarray:
    """Rows with ties at the k-th value, -inf entries and duplicates, [4, 12]."""
    return np.array(
        [
            [1.0, 3.0, 3.0, 2.0, 2.0, 2.0, 0.5, -1.0, 3.0, 0.0, 2.0, 1.5],
            [0.0] * 12,  # everything tied
            [5.0, -np.inf, 4.0, 4.0, -np.inf, 1.0, 1.0, 1.0, 0.0, 4.0, 3.0, 2.0],
            [-2.5, -2.5, -1.0, -7.0, -1.0, -2.5, -3.0, -0.5, -2.5, -9.0, -1.0, -4.0],
        ],
        dtype=np.float32,
    )


@pytest.mark.reference
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 7, 12, 50])
def test_topk_mask_equals_transformers_warper_including_ties(k):
    torch = pytest.importorskip("torch")
    lp = pytest.importorskip("transformers.generation.logits_process")
    rng = np.random.default_rng(k)
    rows = [_tied_logits(), np.round(rng.normal(size=(6, 12)), 1).astype(np.float32)]  # rounding → many ties
    rows.append(rng.normal(size=(3, 2051)).astype(np.float32))
    for logits in rows:
        want = lp.TopKLogitsWarper(k)(None, torch.from_numpy(logits.copy())).numpy()
        np.testing.assert_array_equal(topk_mask(logits, k), want)


def test_topk_mask_keeps_ties_at_the_kth_value():
    out = topk_mask(_tied_logits(), 2)
    np.testing.assert_array_equal(np.isfinite(out[0]), _tied_logits()[0] >= 3.0)  # three 3.0s survive k=2
    assert np.isfinite(out[1]).all()  # all tied: nothing removed
    np.testing.assert_array_equal(np.isfinite(out[2]), [1, 0, 1, 1, 0, 0, 0, 0, 0, 1, 0, 0])


def test_topk_larger_than_vocabulary_keeps_everything():
    logits = np.array([[0.1, -3.0, 2.0]], np.float32)
    np.testing.assert_array_equal(topk_mask(logits, 10), logits)
    with pytest.raises(ValueError, match="k >= 1"):
        topk_mask(logits, 0)


def test_nan_logits_are_an_error_not_a_silent_pick():
    logits = np.zeros((3, 5), np.float32)
    logits[1, 2] = np.nan
    for params in (SamplingParams(temperature=0.0), SamplingParams()):
        with pytest.raises(ValueError, match=r"NaN in rows \[1\]"):
            sample(logits, params, np.random.default_rng(0))


def test_greedy_is_argmax_first_index_on_ties():
    logits = np.array([[0.0, 2.0, 2.0, 1.0], [3.0, -1.0, 3.0, 3.0]], np.float32)
    np.testing.assert_array_equal(sample(logits, SamplingParams(temperature=0.0)), [1, 0])


def test_mask_undecodable_removes_codes_mimi_cannot_decode():
    logits = np.zeros((3, 2051), np.float32)
    logits[:, 2048:] = 100.0  # would always win unmasked
    masked = mask_undecodable(logits, 2048)
    assert np.isneginf(masked[:, 2048:]).all() and (masked[:, :2048] == 0).all()
    assert logits[0, 2050] == 100.0  # input left alone
    greedy = sample(logits, SamplingParams(temperature=0.0))
    assert (greedy < 2048).all()
    drawn = sample(logits, SamplingParams(temperature=1.0, topk=2051), np.random.default_rng(0))
    assert (drawn < 2048).all()
    unmasked = sample(logits, SamplingParams(temperature=0.0, mask_undecodable=False))
    np.testing.assert_array_equal(unmasked, [2048] * 3)  # the official code would pick them


def test_exponential_race_picks_argmax_p_over_q():
    p = np.array([[0.5, 0.3, 0.2, 0.0]], np.float32)
    assert exponential_race(p, np.array([[1.0, 1.0, 1.0, 1.0]]))[0] == 0
    assert exponential_race(p, np.array([[2.0, 0.5, 1.0, 1.0]]))[0] == 1  # 0.25, 0.6, 0.2
    # A zero-probability entry never wins, even against an underflowed draw q == 0.
    assert exponential_race(p, np.array([[1.0, 1.0, 1.0, 0.0]]))[0] == 0


def test_same_seed_same_draws_and_rng_required():
    logits = np.random.default_rng(1).normal(size=(4, 2051)).astype(np.float32)
    params = SamplingParams(temperature=0.9, topk=50)
    a = [sample(logits, params, np.random.default_rng(7)) for _ in range(2)]
    np.testing.assert_array_equal(a[0], a[1])
    with pytest.raises(ValueError, match="random generator"):
        sample(logits, params)
    with pytest.raises(ValueError, match=r"\[B, V\]"):
        sample(logits[0], params, np.random.default_rng(0))


def test_draws_stay_inside_the_top_k():
    logits = np.random.default_rng(2).normal(size=(64, 2051)).astype(np.float32)
    params = SamplingParams(temperature=1.5, topk=5)
    allowed = np.argsort(-logits, axis=1)[:, :5]
    for seed in range(20):
        drawn = sample(logits, params, np.random.default_rng(seed))
        assert all(d in row for d, row in zip(drawn, allowed))


def test_chi_square_frequencies_match_the_tempered_topk_distribution():
    stats = pytest.importorskip("scipy.stats")
    logits = np.array([2.0, 1.5, 1.0, 0.2, -0.5, 1.0, -3.0, 0.7], np.float32)
    params = SamplingParams(temperature=0.7, topk=5)  # keeps 2.0, 1.5, 1.0, 1.0 (tie), 0.7
    n = 20_000
    rows = np.broadcast_to(logits, (n, logits.size))
    drawn = sample(rows, params, np.random.default_rng(1234))
    observed = np.bincount(drawn, minlength=logits.size)
    expected_p = softmax(topk_mask(logits / np.float32(0.7), 5)).astype(np.float64)
    support = expected_p > 0
    assert (observed[~support] == 0).all()
    assert support.sum() == 5
    p_value = stats.chisquare(observed[support], n * expected_p[support] / expected_p[support].sum()).pvalue
    assert p_value > 1e-3
    # The test has power: the untempered distribution is rejected by the same draws.
    wrong = softmax(topk_mask(logits, 5)).astype(np.float64)[support]
    assert stats.chisquare(observed[support], n * wrong / wrong.sum()).pvalue < 1e-6
