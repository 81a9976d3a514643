"""Keyed STFT patchwork watermark: embed/detect round trips, a representative subset of the
attacks, false positives, sample rates and bad input. Synthetic voiced speech only (no apt
packages); the full 20-clip / 1000-negative sweep is test_watermark_sweep.py (slow) and
tools/watermark_report.py."""

import numpy as np
import pytest
import soxr

from csm_audio.watermark import (
    DEFAULT_KEY,
    DEFAULT_PARAMS,
    DEFAULT_PAYLOAD,
    PatchworkWatermarker,
    WatermarkResult,
    detect,
    embed,
    false_positive_bound,
)
from csm_audio.watermark import attacks, evaluate, testsignals
from csm_core.protocols import Watermarker

SR = 24000


@pytest.fixture(scope="module")
def clips():
    # 3 s (the shortest allowed crop length), 5 s and 8 s speech-like clips
    return [testsignals.voiced_speech(seed, sec) for seed, sec in ((11, 3.0), (12, 5.0), (13, 8.0))]


@pytest.fixture(scope="module")
def marked(clips):
    payloads = [0x12345678, 0xDEADBEEF, DEFAULT_PAYLOAD]
    return [(embed(x, SR, DEFAULT_KEY, p), p) for x, p in zip(clips, payloads)]


def snr_db(x, y):
    x = np.asarray(x, np.float64)
    return 10 * np.log10(np.sum(x**2) / np.sum((np.asarray(y, np.float64) - x) ** 2))


def test_embed_keeps_shape_dtype_and_meets_snr(clips, marked):
    for x, (y, _) in zip(clips, marked):
        assert y.shape == x.shape and y.dtype == x.dtype
        assert 25.0 <= snr_db(x, y) <= 26.0
        assert np.max(np.abs(y)) <= 1.0


def test_clean_round_trip(marked):
    for y, payload in marked:
        r = detect(y, SR)
        assert isinstance(r, WatermarkResult)
        assert r.found and r.payload == payload, r
        assert r.score >= DEFAULT_PARAMS.sync_threshold
        assert r.details["fp_bound"] <= 1e-6


@pytest.mark.parametrize(
    "condition",
    ["resample 24k>16k>24k", "gain 0.1", "gain 2", "PCM16 WAV", "FLAC", "8-bit mu-law", "MP3", "Vorbis", "Opus", "crop 3 s"],
)
def test_payload_survives(marked, condition):
    attack = attacks.standard_attacks(SR)[condition]
    for i, (y, payload) in enumerate(marked):
        r = detect(attack(y, i), SR)
        assert r.found and r.payload == payload, (condition, i, r)


def test_payload_survives_white_noise_at_20db(marked):
    # target: >= 90% of clips; here 3 clips x 4 noise draws (the sweep measures 20 clips)
    ok = [
        detect(attacks.add_noise(y, 20.0, seed=s), SR).payload == payload
        for y, payload in marked
        for s in range(4)
    ]
    assert sum(ok) >= 11, ok


def test_crops_at_every_offset_within_a_hop(clips, marked):
    y, payload = marked[2]
    for start in (1, 100, 257, 511, 24000 + 333):
        r = detect(y[start : start + 3 * SR], SR)
        assert r.found and r.payload == payload, (start, r)


def test_streamed_chunks_keep_one_grid(clips):
    x = clips[2].astype(np.float64)
    wm = PatchworkWatermarker(payload=31)
    for chunk in (1920, 7 * 1920 + 5):  # one Mimi frame (80 ms); an odd size
        y = np.concatenate([wm.embed(x[i : i + chunk], SR, start_sample=i) for i in range(0, len(x), chunk)])
        assert snr_db(x, y) >= 25.0
        r = wm.detect(y, SR)
        assert r.found and r.payload == 31 and r.score > 0.8 * detect(wm.embed(x, SR), SR).score
    # without positions every chunk restarts the grid and the mark is lost
    y = np.concatenate([wm.embed(x[i : i + 1920], SR) for i in range(0, len(x), 1920)])
    assert not wm.detect(y, SR).found
    with pytest.raises(ValueError, match="start_sample"):
        embed(x, SR, start_sample=-1)


def test_no_clipping_on_a_loud_clip():
    x = testsignals.voiced_speech(21, 3.0, peak=1.0)
    y = embed(x, SR)
    assert np.max(np.abs(y)) <= 1.0
    assert snr_db(x, y) >= 25.0
    assert detect(y, SR).payload == DEFAULT_PAYLOAD


def test_wrong_key_and_unmarked_audio_are_not_detected(clips, marked):
    for y, _ in marked:
        r = detect(y, SR, key=b"some other key")
        assert not r.found and r.payload is None
    neg = evaluate.negative_sweep(24, seed=5, extra=list(clips))
    assert neg.false_positives == 0
    assert max(neg.max_score.values()) < DEFAULT_PARAMS.sync_threshold


def test_false_positive_bound():
    p = DEFAULT_PARAMS
    assert false_positive_bound(p) <= 1e-6
    assert false_positive_bound(p) == pytest.approx(p.n_candidates * np.exp(-p.sync_threshold**2 / 2) / 65536)


@pytest.mark.parametrize("rate", [16000, 44100, 48000])
def test_other_sample_rates(clips, rate):
    x = soxr.resample(clips[1], SR, rate).astype(np.float32)
    y = embed(x, rate, payload=77)
    assert y.shape == x.shape and snr_db(x, y) >= 25.0
    assert detect(y, rate).payload == 77
    # and a mark made at 24 kHz is found after resampling to this rate
    y24, payload = embed(clips[1], SR, payload=78), 78
    assert detect(soxr.resample(y24, SR, rate), rate).payload == payload


def test_integer_pcm_input(clips):
    pcm = (clips[1] * 32767).astype(np.int16)
    y = embed(pcm, SR, payload=5)
    assert y.dtype == np.float32
    assert detect(y, SR).payload == 5
    assert detect((y * 32767).astype(np.int16), SR).payload == 5


def test_short_silent_and_bad_input():
    r = detect(np.zeros(DEFAULT_PARAMS.min_samples - 1, np.float32) + 0.1, SR)
    assert not r.found and "too short" in r.reason
    r = detect(np.zeros(0, np.float32), SR)
    assert not r.found and "too short" in r.reason
    r = detect(np.zeros(3 * SR, np.float32), SR)
    assert not r.found and r.reason
    short = testsignals.voiced_speech(3, 0.5)
    y = embed(short, SR)  # embedding a short clip works; it is just not detectable on its own
    assert y.shape == short.shape
    assert np.array_equal(embed(np.zeros(SR, np.float32), SR), np.zeros(SR, np.float32))
    assert embed(np.zeros(0, np.float32), SR).shape == (0,)
    bad = np.full(SR, 0.1, np.float32)
    bad[100] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        detect(bad, SR)
    with pytest.raises(ValueError, match="NaN"):
        embed(bad, SR)
    with pytest.raises(ValueError, match="1-D"):
        detect(np.zeros((SR, 2)), SR)
    with pytest.raises(ValueError, match="sample_rate"):
        detect(np.zeros(SR), 0)
    with pytest.raises(ValueError, match="payload"):
        embed(np.zeros(SR), SR, payload=2**32)


def test_watermarker_protocol(clips):
    wm = PatchworkWatermarker()
    assert isinstance(wm, Watermarker)
    assert wm.key == bytes([212, 211, 146, 56, 201]) and wm.payload == DEFAULT_PAYLOAD == 0xD4D39238
    r = wm.detect(wm.embed(clips[0], SR), SR)
    assert r.found and r.payload == DEFAULT_PAYLOAD
    other = PatchworkWatermarker(key="project key", payload=9)
    assert other.detect(other.embed(clips[0], SR), SR).payload == 9
    assert not wm.detect(other.embed(clips[0], SR), SR).found
