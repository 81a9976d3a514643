"""Checks of what a user hands an audio codec (csm_core.protocols.AudioCodec), shared by every Mimi
implementation so each gives the same clear error for the same bad input. The messages are the
numpy codec's (csm_audio.mimi), which came first."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["check_audio", "check_codes", "check_num_codebooks"]


def check_num_codebooks(k: Any, maximum: int) -> int:
    """None -> maximum; else an integer from 1 to maximum."""
    k = maximum if k is None else k
    if isinstance(k, bool) or int(k) != k or not 1 <= k <= maximum:
        raise ValueError(f"num_codebooks must be an integer from 1 to {maximum}, got {k!r}")
    return int(k)


def check_audio(audio: Any, sample_rate: int) -> np.ndarray:
    """1-D (or [1, L] / [L, 1]) finite float samples -> float32 [L]."""
    a = np.asarray(audio)
    if a.ndim == 2 and 1 in a.shape:
        a = a.reshape(-1)
    if a.ndim != 1:
        raise ValueError(f"audio must be 1-D mono samples at {sample_rate} Hz, got shape {a.shape}")
    if a.size == 0:
        raise ValueError("audio is empty (0 samples); nothing to encode")
    if a.dtype.kind != "f":
        hint = " (integer PCM? divide by 32768 first)" if a.dtype.kind in "iu" else ""
        raise ValueError(f"audio must be float samples in [-1, 1], got dtype {a.dtype}{hint}")
    a = a.astype(np.float32)
    bad = ~np.isfinite(a)
    if bad.any():
        raise ValueError(f"audio holds {int(bad.sum())} NaN/inf samples (first at index {int(np.argmax(bad))})")
    return a


def check_codes(codes: Any, num_codebooks: int, codebook_size: int) -> np.ndarray:
    """Integer codes [K, T] with 1 <= K <= num_codebooks, each in [0, codebook_size) -> int64."""
    c = np.asarray(codes)
    if c.ndim != 2:
        raise ValueError(f"codes must be a 2-D array [num_codebooks, frames], got shape {c.shape}")
    if c.dtype.kind not in "iu":
        raise ValueError(f"codes must be integers, got dtype {c.dtype}")
    if not 1 <= c.shape[0] <= num_codebooks:
        raise ValueError(f"codes have {c.shape[0]} codebooks (shape {c.shape}); expected 1 to {num_codebooks}")
    if c.size and (c.min() < 0 or c.max() >= codebook_size):
        bad = (c < 0) | (c >= codebook_size)
        k, t = np.argwhere(bad)[0]
        raise ValueError(f"code {int(c[k, t])} at codebook {k}, frame {t} is out of range [0, {codebook_size})")
    return c.astype(np.int64)
