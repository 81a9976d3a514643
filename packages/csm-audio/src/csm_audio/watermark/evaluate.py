"""The measurement behind the pass targets, shared by tools/watermark_report.py and the slow
test: payload decode rates under the standard attacks, watermark SNR and clipping, false
positives on unmarked audio, and speed."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from . import attacks, testsignals
from .api import DEFAULT_KEY, detect, embed

# Condition → required exact-decode rate (spec/watermark.md §4 pass targets).
TARGETS = {
    "clean": 0.99,
    "resample 24k>16k>24k": 0.99,
    "gain 0.1": 0.99,
    "gain 2": 0.99,
    "PCM16 WAV": 0.99,
    "FLAC": 0.99,
    "8-bit mu-law": 0.99,
    "MP3": 0.95,
    "Vorbis": 0.95,
    "Opus": 0.95,
    "crop 3 s": 0.95,
    "AWGN 20 dB": 0.90,
}


@dataclass
class PayloadSweep:
    decoded: dict[str, list[bool]] = field(default_factory=dict)  # condition → per-clip exact decode
    scores: dict[str, list[float]] = field(default_factory=dict)
    snr_db: list[float] = field(default_factory=list)
    clipped: int = 0  # output samples with |y| > 1

    def rate(self, condition: str) -> float:
        return float(np.mean(self.decoded[condition]))


def payload_sweep(clips: list[np.ndarray], sample_rate: int = 24000, key: bytes = DEFAULT_KEY,
                  seed: int = 0, conditions: list[str] | None = None) -> PayloadSweep:
    """Embed a seeded random payload into every clip, attack, detect; record exact decodes."""
    rng = np.random.default_rng(seed)
    table = {**attacks.standard_attacks(sample_rate), **attacks.stress_attacks(sample_rate)}
    names = conditions or list(TARGETS)
    out = PayloadSweep({n: [] for n in names}, {n: [] for n in names})
    for i, x in enumerate(clips):
        payload = int(rng.integers(0, 2**32))
        y = embed(x, sample_rate, key, payload)
        x64 = np.asarray(x, np.float64)
        out.snr_db.append(float(10 * np.log10(np.sum(x64**2) / np.sum((y - x64) ** 2))))
        out.clipped += int(np.sum(np.abs(y) > 1.0))
        for name in names:
            r = detect(table[name](y, seed * 1000 + i), sample_rate, key)
            out.decoded[name].append(bool(r.found and r.payload == payload))
            out.scores[name].append(r.score)
    return out


NEGATIVE_KINDS = ("speech", "white noise", "pink noise", "brown noise", "tones", "silence", "hiss", "other key")


def negative_clip(kind: str, seed: int, seconds: float, sr: int = 24000) -> np.ndarray:
    """One unmarked clip (or one marked under a different key) of the given kind."""
    if kind == "speech":
        return testsignals.voiced_speech(seed, seconds, sr)
    if kind.endswith("noise"):
        return testsignals.noise(seed, seconds, kind.split()[0], sr)
    if kind == "tones":
        return testsignals.tones(seed, seconds, sr)
    if kind == "silence":
        return testsignals.silence(seed, seconds, sr)
    if kind == "hiss":
        return testsignals.silence(seed, seconds, sr, level=1e-4)
    if kind == "other key":
        return embed(testsignals.voiced_speech(seed, seconds, sr), sr, key=b"not the detector key")
    raise ValueError(f"unknown negative kind {kind!r}; expected one of {NEGATIVE_KINDS}")


@dataclass
class NegativeSweep:
    n_clips: int
    false_positives: int
    max_score: dict[str, float]


def negative_sweep(n_clips: int, seed: int = 0, extra: list[np.ndarray] | None = None,
                   key: bytes = DEFAULT_KEY, sr: int = 24000) -> NegativeSweep:
    """Detect on n_clips seeded unmarked clips (3–6 s, cycling through NEGATIVE_KINDS) plus any
    extra unmarked clips (e.g. real speech); count detections."""
    rng = np.random.default_rng(seed)
    fp, max_score = 0, {k: -np.inf for k in NEGATIVE_KINDS}
    clips = [(NEGATIVE_KINDS[i % len(NEGATIVE_KINDS)], None) for i in range(n_clips)]
    clips += [("real speech", x) for x in extra or []]
    for i, (kind, x) in enumerate(clips):
        if x is None:
            x = negative_clip(kind, seed * 100000 + i, float(rng.uniform(3.0, 6.0)), sr)
        r = detect(x, sr, key)
        fp += int(r.found)
        max_score[kind] = max(max_score.get(kind, -np.inf), r.score)
    return NegativeSweep(len(clips), fp, max_score)


def speed(x: np.ndarray, sr: int = 24000, repeats: int = 5) -> tuple[float, float]:
    """Median real-time factors (audio seconds per compute second) of embed and detect."""
    dur = len(x) / sr
    t_embed, t_detect = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        y = embed(x, sr)
        t1 = time.perf_counter()
        detect(y, sr)
        t2 = time.perf_counter()
        t_embed.append(t1 - t0)
        t_detect.append(t2 - t1)
    return dur / float(np.median(t_embed)), dur / float(np.median(t_detect))
