"""Sample-rate conversion (soxr) and channel down-mixing."""

from __future__ import annotations

import numpy as np
import soxr

__all__ = ["resample", "to_mono"]


def to_mono(audio: np.ndarray) -> np.ndarray:
    """[frames, channels] or [frames] -> [frames] float32, channels averaged."""
    a = np.asarray(audio, np.float32)
    if a.ndim == 1:
        return a
    if a.ndim != 2:
        raise ValueError(f"audio must be [frames] or [frames, channels], got shape {a.shape}")
    return a.mean(axis=1, dtype=np.float32) if a.shape[1] > 1 else a[:, 0]


def resample(audio: np.ndarray, orig_rate: int, target_rate: int, quality: str = "HQ") -> np.ndarray:
    """Resample [frames] or [frames, channels] float audio with soxr; float32 out, same layout.

    quality: soxr preset 'QQ', 'LQ', 'MQ', 'HQ' (default) or 'VHQ'.
    """
    for name, rate in (("orig_rate", orig_rate), ("target_rate", target_rate)):
        if not (isinstance(rate, (int, np.integer)) and rate > 0):
            raise ValueError(f"{name} must be a positive integer sample rate, got {rate!r}")
    a = np.asarray(audio, np.float32)
    if a.ndim not in (1, 2):
        raise ValueError(f"audio must be [frames] or [frames, channels], got shape {a.shape}")
    if orig_rate == target_rate or a.shape[0] == 0:
        return a.copy()
    return np.asarray(soxr.resample(a, int(orig_rate), int(target_rate), quality=quality), np.float32)
