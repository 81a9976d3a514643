"""Sampling semantics (spec/csm.md §2 sample_topk), the numpy reference every backend matches.

- temperature 0: greedy argmax (first index on ties).
- otherwise logits / T, −inf for logits strictly below the k-th largest (ties survive),
  softmax, then the exponential race: argmax(p / q), q ~ Exp(1) i.i.d., an exact categorical draw.
- mask_undecodable: codes >= codec_size get −inf first (a documented deviation from the official code).
"""

from __future__ import annotations

import numpy as np

from .protocols import SamplingParams

__all__ = ["mask_undecodable", "topk_mask", "softmax", "sample", "exponential_race"]


def mask_undecodable(logits: np.ndarray, codec_size: int) -> np.ndarray:
    """Copy of logits [..., V] with entries >= codec_size set to −inf."""
    out = np.array(logits, dtype=np.float32, copy=True)
    out[..., codec_size:] = -np.inf
    return out


def topk_mask(logits: np.ndarray, k: int) -> np.ndarray:
    """logits [..., V] with every value strictly below the k-th largest set to −inf (ties kept)."""
    logits = np.asarray(logits, dtype=np.float32)
    if int(k) < 1:
        raise ValueError(f"top-k needs k >= 1, got {k}")
    k = min(int(k), logits.shape[-1])
    kth = np.partition(logits, -k, axis=-1)[..., -k, None]  # the k-th largest, [..., 1]
    return np.where(logits < kth, np.float32(-np.inf), logits)


def softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    m = np.max(x, axis=-1, keepdims=True)
    e = np.exp(x - m)
    return e / np.sum(e, axis=-1, keepdims=True)


def exponential_race(probs: np.ndarray, q: np.ndarray) -> np.ndarray:
    """argmax(p / q) over the last axis; q >= 0 are i.i.d. Exp(1) draws of the same shape.

    Entries with p == 0 never win, even where a draw underflows to q == 0 (0/0 would be NaN,
    which argmax would pick).
    """
    p = np.asarray(probs, np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        race = np.where(p > 0, p / np.asarray(q, np.float32), np.float32(-1))
    return np.argmax(race, axis=-1)


def sample(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator | None = None) -> np.ndarray:
    """Pick one code per row of logits [B, V] → int32 [B]."""
    logits = np.asarray(logits, dtype=np.float32)
    if logits.ndim != 2:
        raise ValueError(f"logits must be [B, V], got shape {logits.shape}")
    if np.isnan(logits).any():
        raise ValueError(f"logits contain NaN in rows {np.flatnonzero(np.isnan(logits).any(-1)).tolist()[:8]}")
    if params.mask_undecodable and logits.shape[-1] > params.codec_size:
        logits = mask_undecodable(logits, params.codec_size)
    if params.greedy:
        return np.argmax(logits, axis=-1).astype(np.int32)
    if rng is None:
        raise ValueError("sampling with temperature > 0 needs a random generator")
    probs = softmax(topk_mask(logits / np.float32(params.temperature), params.topk))
    q = rng.exponential(size=probs.shape).astype(np.float32)
    return exponential_race(probs, q).astype(np.int32)
