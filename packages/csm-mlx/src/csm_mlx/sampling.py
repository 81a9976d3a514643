"""Sampling on the MLX device, same semantics as ``csm_core.sampling`` (spec/csm.md §2 sample_topk),
with every row's parameters and random stream its own (continuous batching mixes requests).

- mask_undecodable: codes >= codec_size get −inf first (per row: ``limit``).
- temperature 0: argmax (first index on ties).
- otherwise logits / T, −inf strictly below the k-th largest (ties kept), softmax, exponential race
  argmax(p / q) with q ~ Exp(1): an exact categorical draw, built lazily so a whole frame is one graph.

Random streams are counter-based: a row's draws for one frame depend only on (seed, stream, counter)
— the request's seed, a stream number (the row of a FrameModel batch; 0 for a slot) and the frame's
index since the request started — hashed on the host into two 32-bit keys (``frame_keys``), then per
(codebook, code) on the device (``row_uniforms``). So a seeded request draws the same numbers alone,
in any row of any batch, and next to any other requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import mlx.core as mx
import numpy as np
from csm_core.protocols import SamplingParams

__all__ = ["RowSampling", "frame_keys", "row_uniforms", "prepare_logits", "topk_mask", "exponential_race", "sample_rows"]

_M64 = (1 << 64) - 1


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64 arrays (wrapping arithmetic)."""
    z = (z + np.uint64(0x9E3779B97F4A7C15)).astype(np.uint64)
    z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)).astype(np.uint64)
    z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)).astype(np.uint64)
    return z ^ (z >> np.uint64(31))


def frame_keys(seeds: Sequence[int], streams: Sequence[int], counters: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-row keys for one frame: uint32 [R] twice, from (seed mod 2**64, stream, counter)."""
    s = seeds if isinstance(seeds, np.ndarray) and seeds.dtype == np.uint64 else np.array([int(x) & _M64 for x in seeds], np.uint64)
    with np.errstate(over="ignore"):
        z = _splitmix64(s)
        z = _splitmix64(z ^ np.asarray(streams, np.uint64))
        z = _splitmix64(z ^ np.asarray(counters, np.uint64))
    return (z & np.uint64(0xFFFFFFFF)).astype(np.uint32), (z >> np.uint64(32)).astype(np.uint32)


def _fmix32(h: mx.array) -> mx.array:
    """MurmurHash3's 32-bit finaliser (a bijection of uint32)."""
    h = h ^ (h >> 16)
    h = h * mx.array(0x85EBCA6B, mx.uint32)
    h = h ^ (h >> 13)
    h = h * mx.array(0xC2B2AE35, mx.uint32)
    return h ^ (h >> 16)


def row_uniforms(key0: mx.array, key1: mx.array, codebook: int, size: int) -> mx.array:
    """float32 [R, size] uniforms in (0, 1) for `codebook`'s draw from the row keys uint32 [R].

    u = (2·(h >> 9) + 1) / 2**24 for h = hash(codebook·size + code, keys): odd multiples of 2**-24,
    exact in float32, never 0 nor 1 (so −log u is finite and > 0).
    """
    idx = mx.arange(codebook * size, (codebook + 1) * size, dtype=mx.uint32)[None, :]
    h = _fmix32((idx * mx.array(0x9E3779B1, mx.uint32)) ^ key0[:, None])
    h = _fmix32(h ^ key1[:, None])
    return ((h >> 9) * 2 + 1).astype(mx.float32) * (2.0**-24)


@dataclass(frozen=True)
class RowSampling:
    """Per-row sampling parameters as device arrays [R] plus the static facts a compiled graph
    is specialised on: ``kmax`` (top-k values taken per row, ≥ every row's k) and ``greedy`` (all
    rows greedy: no random draws at all)."""

    temperature: mx.array  # float32 [R], 0 = greedy
    topk: mx.array  # int32 [R], clipped to V
    limit: mx.array  # int32 [R]: codes >= limit are masked (V when not masking)
    key0: mx.array  # uint32 [R]
    key1: mx.array  # uint32 [R]
    kmax: int
    greedy: bool

    @staticmethod
    def build(params: Sequence[SamplingParams], keys: tuple[np.ndarray, np.ndarray], vocab: int, rows: int | None = None) -> "RowSampling":
        """From one SamplingParams per row and `frame_keys`; `rows` > len(params) pads with greedy rows."""
        n = len(params)
        rows = n if rows is None else rows
        temp = np.zeros(rows, np.float32)
        topk = np.ones(rows, np.int32)
        limit = np.full(rows, vocab, np.int32)
        k0, k1 = np.zeros(rows, np.uint32), np.zeros(rows, np.uint32)
        for i, p in enumerate(params):
            temp[i] = p.temperature
            topk[i] = min(int(p.topk), vocab)
            if p.mask_undecodable and vocab > p.codec_size:
                limit[i] = p.codec_size
        k0[:n], k1[:n] = keys
        greedy = bool((temp == 0).all())
        kmax = 1 if greedy else _bucket_k(int(topk[temp > 0].max()), vocab)
        return RowSampling(mx.array(temp), mx.array(topk), mx.array(limit), mx.array(k0), mx.array(k1), kmax, greedy)

    def arrays(self) -> tuple[mx.array, ...]:
        return self.temperature, self.topk, self.limit, self.key0, self.key1


def _bucket_k(k: int, vocab: int) -> int:
    """Round the largest top-k up to a power of two (fewer compiled variants), at most V."""
    return min(vocab, 1 << max(0, k - 1).bit_length())


def prepare_logits(logits: mx.array, limit: mx.array) -> mx.array:
    """float32 logits [R, V] with codes >= limit [R] set to −inf."""
    logits = logits.astype(mx.float32)
    keep = mx.arange(logits.shape[-1], dtype=mx.int32)[None, :] < limit[:, None]
    return mx.where(keep, logits, mx.array(-mx.inf, mx.float32))


def topk_mask(logits: mx.array, k: mx.array | int, kmax: int | None = None) -> mx.array:
    """logits [R, V]: values strictly below each row's k-th largest become −inf (ties survive).
    ``k`` an int or int32 [R] (each <= kmax, which defaults to k)."""
    V = logits.shape[-1]
    if isinstance(k, int):
        k, kmax = mx.full((logits.shape[0],), min(k, V), mx.int32), min(k, V)
    kmax = min(int(kmax), V)
    top = mx.sort(mx.topk(logits, kmax, axis=-1), axis=-1)  # [R, kmax] ascending
    kth = mx.take_along_axis(top, (kmax - mx.minimum(k, kmax))[:, None].astype(mx.int32), axis=-1)  # [R, 1]
    return mx.where(logits < kth, mx.array(-mx.inf, logits.dtype), logits)


def exponential_race(probs: mx.array, q: mx.array) -> mx.array:
    """argmax(p / q) over the last axis → int32; q > 0 are i.i.d. Exp(1) draws shaped like probs."""
    return mx.argmax(probs / q, axis=-1).astype(mx.int32)


def sample_rows(logits: mx.array, rows: RowSampling, codebook: int) -> mx.array:
    """One code per row of logits [R, V] → int32 [R] (lazy), each row with its own parameters and
    its own draws (`codebook` picks this codebook's numbers from the row's frame keys)."""
    logits = prepare_logits(logits, rows.limit)
    greedy = mx.argmax(logits, axis=-1).astype(mx.int32)
    if rows.greedy:
        return greedy
    hot = rows.temperature > 0
    scaled = logits / mx.where(hot, rows.temperature, 1.0)[:, None]
    probs = mx.softmax(topk_mask(scaled, rows.topk, rows.kmax), axis=-1)
    q = -mx.log(row_uniforms(rows.key0, rows.key1, codebook, logits.shape[-1]))
    return mx.where(hot, exponential_race(probs, q), greedy)
