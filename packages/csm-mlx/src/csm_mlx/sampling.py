"""Sampling on the MLX device, same semantics as ``csm_core.sampling`` (spec/csm.md §2 sample_topk).

- mask_undecodable: codes >= codec_size get −inf first.
- temperature 0: argmax (first index on ties).
- otherwise logits / T, −inf strictly below the k-th largest (ties kept), softmax, exponential race
  argmax(p / q) with q ~ Exp(1): an exact categorical draw, built lazily so a whole frame is one graph.
"""

from __future__ import annotations

import mlx.core as mx
from csm_core.protocols import SamplingParams

__all__ = ["prepare_logits", "topk_mask", "exponential_race", "sample"]


def topk_mask(logits: mx.array, k: int) -> mx.array:
    """logits [B, V]: values strictly below the k-th largest become −inf (ties survive)."""
    k = min(int(k), logits.shape[-1])
    if k == logits.shape[-1]:
        return logits
    kth = mx.min(mx.topk(logits, k, axis=-1), axis=-1, keepdims=True)  # [B, 1]
    return mx.where(logits < kth, mx.array(-mx.inf, logits.dtype), logits)


def prepare_logits(logits: mx.array, params: SamplingParams) -> mx.array:
    """float32 logits with undecodable codes masked (when asked)."""
    logits = logits.astype(mx.float32)
    V = logits.shape[-1]
    if params.mask_undecodable and V > params.codec_size:
        keep = mx.arange(V) < params.codec_size
        logits = mx.where(keep, logits, mx.array(-mx.inf, mx.float32))
    return logits


def exponential_race(probs: mx.array, q: mx.array) -> mx.array:
    """argmax(p / q) over the last axis → int32; q > 0 are i.i.d. Exp(1) draws shaped like probs."""
    return mx.argmax(probs / q, axis=-1).astype(mx.int32)


def sample(logits: mx.array, params: SamplingParams, key: mx.array | None) -> mx.array:
    """One code per row of logits [B, V] → int32 [B] (lazy). ``key`` is needed when temperature > 0."""
    logits = prepare_logits(logits, params)
    if params.greedy:
        return mx.argmax(logits, axis=-1).astype(mx.int32)
    if key is None:
        raise ValueError("sampling with temperature > 0 needs a random key")
    probs = mx.softmax(topk_mask(logits / params.temperature, params.topk), axis=-1)
    # Exp(1) = −log(1 − U), U in [0, 1). U = 0 gives q = 0; the floor keeps p/q from being 0/0 = NaN.
    q = mx.maximum(-mx.log1p(-mx.random.uniform(shape=probs.shape, key=key)), 1e-30)
    return exponential_race(probs, q)
