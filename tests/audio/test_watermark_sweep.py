"""The full pass-target sweep (spec/watermark.md §4) on 20 seeded synthetic speech-like clips
of 3–10 s and 1000 unmarked clips. Minutes: slow-marked; tools/watermark_report.py prints the
same figures as a table (with espeak-ng speech when installed)."""

import numpy as np
import pytest

from csm_audio.watermark import DEFAULT_PARAMS, evaluate, false_positive_bound, testsignals

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sweep():
    rng = np.random.default_rng(0)
    clips = [testsignals.voiced_speech(i, float(rng.uniform(3, 10)), peak=float(rng.uniform(0.3, 0.5))) for i in range(20)]
    return evaluate.payload_sweep(clips, seed=0)


@pytest.mark.parametrize("condition", list(evaluate.TARGETS))
def test_decode_rate_meets_target(sweep, condition):
    assert sweep.rate(condition) >= evaluate.TARGETS[condition], sweep.decoded[condition]


def test_snr_and_clipping(sweep):
    assert min(sweep.snr_db) >= 25.0
    assert sweep.clipped == 0


def test_no_false_positives_in_1000_unmarked_clips():
    neg = evaluate.negative_sweep(1000, seed=1)
    assert neg.n_clips == 1000 and neg.false_positives == 0, neg
    assert false_positive_bound(DEFAULT_PARAMS) <= 1e-6

