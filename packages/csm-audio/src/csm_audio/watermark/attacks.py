"""Signal changes the mark must survive, all in memory (soundfile's bundled libsndfile codecs,
soxr resampling; no ffmpeg). Each maps float audio at sr to float64 audio at sr."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf
import soxr


def codec_roundtrip(x: np.ndarray, sr: int, fmt: str, subtype: str | None = None,
                    compression_level: float | None = None) -> np.ndarray:
    """Write with soundfile (its defaults unless subtype / compression_level are given) and
    read back."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(x, -1, 1), sr, format=fmt, subtype=subtype, compression_level=compression_level)
    buf.seek(0)
    y, _ = sf.read(buf, dtype="float64")
    return y


def resample_roundtrip(x: np.ndarray, sr: int, via: int) -> np.ndarray:
    return soxr.resample(soxr.resample(x, sr, via), via, sr)


def add_noise(x: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """White Gaussian noise at snr_db below the clip's mean power."""
    power = float(np.mean(np.asarray(x, np.float64) ** 2))
    rng = np.random.default_rng(seed)
    return x + rng.standard_normal(len(x)) * np.sqrt(power * 10 ** (-snr_db / 10))


def crop(x: np.ndarray, sr: int, seconds: float, seed: int) -> np.ndarray:
    """A random window of the given length (any start sample)."""
    n = int(round(seconds * sr))
    start = int(np.random.default_rng(seed).integers(0, max(1, len(x) - n + 1)))
    return x[start : start + n]


def standard_attacks(sr: int) -> dict[str, callable]:
    """name → f(x, seed) for the report's conditions."""
    return {
        "clean": lambda x, s: np.asarray(x, np.float64),
        "resample 24k>16k>24k": lambda x, s: resample_roundtrip(x, sr, 16000),
        "gain 0.1": lambda x, s: 0.1 * np.asarray(x, np.float64),
        "gain 2": lambda x, s: 2.0 * np.asarray(x, np.float64),
        "PCM16 WAV": lambda x, s: codec_roundtrip(x, sr, "WAV", "PCM_16"),
        "FLAC": lambda x, s: codec_roundtrip(x, sr, "FLAC"),
        "8-bit mu-law": lambda x, s: codec_roundtrip(x, sr, "WAV", "ULAW"),
        "MP3": lambda x, s: codec_roundtrip(x, sr, "MP3"),
        "Vorbis": lambda x, s: codec_roundtrip(x, sr, "OGG", "VORBIS"),
        "Opus": lambda x, s: codec_roundtrip(x, sr, "OGG", "OPUS"),
        "crop 3 s": lambda x, s: crop(np.asarray(x, np.float64), sr, 3.0, s),
        "AWGN 20 dB": lambda x, s: add_noise(x, 20.0, s),
    }


def stress_attacks(sr: int) -> dict[str, callable]:
    """Harder conditions than the targets, reported for information."""
    return {
        "MP3 compression 0.9": lambda x, s: codec_roundtrip(x, sr, "MP3", compression_level=0.9),
        "Vorbis compression 0.9": lambda x, s: codec_roundtrip(x, sr, "OGG", "VORBIS", compression_level=0.9),
        "crop 3 s + MP3": lambda x, s: codec_roundtrip(crop(np.asarray(x, np.float64), sr, 3.0, s), sr, "MP3"),
        "AWGN 10 dB": lambda x, s: add_noise(x, 10.0, s),
        "resample 24k>8k>24k": lambda x, s: resample_roundtrip(x, sr, 8000),
    }
