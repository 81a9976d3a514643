"""Seeded synthetic test audio for the watermark's tests and report (no data files needed).

`voiced_speech` is speech-like: syllables of harmonic voicing with a wandering f0 and moving
formants, unvoiced fricative bursts, and pauses. The negatives cover what a detector meets
when nothing is marked: noise of several colours, music-like tones and chords, silence.
"""

from __future__ import annotations

import numpy as np

SR = 24000


def _formant_gain(freq: np.ndarray, formants: np.ndarray, bandwidths: np.ndarray) -> np.ndarray:
    """Magnitude of a cascade of resonances at freq (any shape) → same shape."""
    g = np.ones_like(freq)
    for f, bw in zip(formants, bandwidths):
        g = g * (f * f) / np.sqrt((freq * freq - f * f) ** 2 + (bw * freq) ** 2 + 1e-9)
    return g


def _shaped_noise(rng: np.random.Generator, n: int, lo: float, hi: float, sr: int) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / sr)
    spec[(f < lo) | (f > hi)] = 0
    return np.fft.irfft(spec, n)


def voiced_speech(seed: int, seconds: float, sr: int = SR, peak: float = 0.5) -> np.ndarray:
    """Speech-like float32 audio of the given length: voiced syllables, fricatives, pauses."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    out = np.zeros(n)
    f0_base = rng.uniform(90, 230)
    t = 0
    while t < n:
        kind = rng.choice(["voiced", "voiced", "voiced", "fricative", "pause"])
        length = int(sr * (rng.uniform(0.12, 0.35) if kind != "pause" else rng.uniform(0.05, 0.4)))
        length = min(length, n - t)
        if length <= 16:
            break
        env = np.sin(np.pi * np.arange(length) / length) ** 0.6 * rng.uniform(0.3, 1.0)
        if kind == "voiced":
            tt = np.arange(length) / sr
            f0 = f0_base * (1 + 0.12 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * tt + rng.uniform(0, 6)))
            f0 *= 1 + 0.01 * np.cumsum(rng.standard_normal(length)) / np.sqrt(sr)  # slow jitter
            phase = 2 * np.pi * np.cumsum(f0) / sr + rng.uniform(0, 2 * np.pi)
            f_a = np.array([rng.uniform(300, 850), rng.uniform(850, 2300), rng.uniform(2300, 3200), 3800.0])
            f_b = np.array([rng.uniform(300, 850), rng.uniform(850, 2300), rng.uniform(2300, 3200), 3800.0])
            bws = np.array([80.0, 120.0, 180.0, 250.0])
            mix = np.linspace(0, 1, length)[None, :]
            formants = f_a[:, None] * (1 - mix) + f_b[:, None] * mix  # [4, L] moving formants
            seg = np.zeros(length)
            for k in range(1, int(10000 / f0_base) + 1):
                fk = k * f0
                amp = _formant_gain(fk, formants, bws[:, None]) / k**1.2  # glottal roll-off
                amp[fk > 0.45 * sr] = 0
                seg += amp * np.sin(k * phase)
            seg += 0.02 * np.std(seg) * rng.standard_normal(length)  # breath
            out[t : t + length] = seg / (np.std(seg) + 1e-12) * env
        elif kind == "fricative":
            lo = rng.uniform(2000, 4500)
            seg = _shaped_noise(rng, length, lo, min(lo + rng.uniform(2000, 6000), 0.48 * sr), sr)
            out[t : t + length] = 0.3 * seg / (np.std(seg) + 1e-12) * env
        t += length
    out += 1e-4 * rng.standard_normal(n)  # room noise floor
    return (out * peak / (np.max(np.abs(out)) + 1e-12)).astype(np.float32)


def noise(seed: int, seconds: float, colour: str = "white", sr: int = SR, rms: float = 0.1) -> np.ndarray:
    """White, pink or brown noise at the given RMS."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.maximum(np.fft.rfftfreq(n, 1 / sr), 20.0)
    spec *= {"white": 1.0, "pink": f**-0.5, "brown": f**-1.0}[colour]
    x = np.fft.irfft(spec, n)
    return (x * rms / (np.std(x) + 1e-12)).astype(np.float32)


def tones(seed: int, seconds: float, sr: int = SR, peak: float = 0.5) -> np.ndarray:
    """Music-like audio: a sequence of notes and chords with harmonics, vibrato and decays."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    out = np.zeros(n)
    t = 0
    while t < n:
        length = min(int(sr * rng.uniform(0.15, 0.8)), n - t)
        tt = np.arange(length) / sr
        for _ in range(rng.integers(1, 4)):  # notes in the chord
            f = 110.0 * 2 ** (rng.integers(0, 36) / 12)
            vib = 1 + 0.004 * np.sin(2 * np.pi * 5.5 * tt)
            phase = 2 * np.pi * np.cumsum(f * vib) / sr
            for h in range(1, 8):
                if h * f < 0.45 * sr:
                    out[t : t + length] += np.sin(h * phase) / h**1.5 * np.exp(-tt * rng.uniform(0.5, 6))
        t += length
    return (out * peak / (np.max(np.abs(out)) + 1e-12)).astype(np.float32)


def silence(seed: int, seconds: float, sr: int = SR, level: float = 0.0) -> np.ndarray:
    """Digital silence (level 0) or a faint hiss at the given RMS."""
    n = int(round(seconds * sr))
    if level == 0.0:
        return np.zeros(n, dtype=np.float32)
    return (level * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)
