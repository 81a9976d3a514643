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
    """[new, 2*width + orig] polyphase filters (one row per output phase) and the half width,
    computed in float32 as torchaudio does for float32 audio."""
    f32 = np.float32
    base = min(orig, new) * _ROLLOFF
    width = math.ceil(_WIDTH * orig / base)
    idx = np.arange(-width, width + orig, dtype=f32)[None, :] / f32(orig)
    t = (np.arange(0, -new, -1, dtype=f32)[:, None] / f32(new) + idx) * f32(base)
    t = np.clip(t, -_WIDTH, _WIDTH)
    window = np.cos(t * f32(math.pi / _WIDTH / 2)) ** 2
    t = t * f32(math.pi)
    with np.errstate(invalid="ignore", divide="ignore"):
        k = np.where(t == 0, f32(1.0), np.sin(t) / t)
    return (k * window * f32(base / orig)).astype(f32), width


def sinc_resample(x: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Resample 1-D audio as torchaudio does: ceil(new * len / orig) samples out, float32."""
    x = np.asarray(x, np.float32)
    if orig_rate == new_rate or len(x) == 0:
        return x.copy()
    g = math.gcd(int(orig_rate), int(new_rate))
    orig, new = int(orig_rate) // g, int(new_rate) // g
    kernel, width = _kernel(orig, new)
    n = len(x)
    padded = np.pad(x, (width, width + orig))
    taps = kernel.shape[1]
    steps = (len(padded) - taps) // orig + 1
    frames = np.lib.stride_tricks.as_strided(padded, (steps, taps), (orig * 4, 4), writeable=False)
    out = (frames @ kernel.T).reshape(-1)  # [steps, new] -> steps * new samples, phase-major
    return out[: math.ceil(new * n / orig)].astype(np.float32)
