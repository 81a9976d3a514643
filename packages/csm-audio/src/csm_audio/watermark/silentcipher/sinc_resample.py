"""torchaudio's default resampler (`torchaudio.functional.resample`: windowed sinc, Hann window,
lowpass_filter_width 6, rolloff 0.99) in numpy.

The official generator resamples with it around SilentCipher (24 kHz -> 44.1 kHz -> 24 kHz), so
matching it, not soxr, is what keeps our marked audio within float rounding of the official.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

__all__ = ["sinc_resample"]

_WIDTH = 6  # lowpass_filter_width
_ROLLOFF = 0.99


@lru_cache(maxsize=8)
def _kernel(orig: int, new: int) -> tuple[np.ndarray, int]:
    """[new, 2*width + orig] polyphase filters (one row per output phase) and the half width."""
    base = min(orig, new) * _ROLLOFF
    width = math.ceil(_WIDTH * orig / base)
    idx = np.arange(-width, width + orig, dtype=np.float64)[None, :] / orig
    t = (np.arange(0, -new, -1, dtype=np.float64)[:, None] / new + idx) * base
    t = np.clip(t, -_WIDTH, _WIDTH)
    window = np.cos(t * math.pi / _WIDTH / 2) ** 2
    t = t * math.pi
    with np.errstate(invalid="ignore", divide="ignore"):
        k = np.where(t == 0, 1.0, np.sin(t) / t)
    return k * window * (base / orig), width


def sinc_resample(x: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Resample 1-D audio as torchaudio does: ceil(new * len / orig) samples out, float32."""
    x = np.asarray(x, np.float32)
    if orig_rate == new_rate or len(x) == 0:
        return x.copy()
    g = math.gcd(int(orig_rate), int(new_rate))
    orig, new = int(orig_rate) // g, int(new_rate) // g
    kernel, width = _kernel(orig, new)
    n = len(x)
    padded = np.pad(x.astype(np.float64), (width, width + orig))
    taps = kernel.shape[1]
    steps = (len(padded) - taps) // orig + 1
    frames = np.lib.stride_tricks.as_strided(padded, (steps, taps), (orig * 8, 8), writeable=False)
    out = (frames @ kernel.T).reshape(-1)  # [steps, new] -> steps * new samples, phase-major
    return out[: math.ceil(new * n / orig)].astype(np.float32)
