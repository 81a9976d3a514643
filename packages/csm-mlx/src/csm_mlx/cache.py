"""Per-layer KV cache: preallocated in steps, sliced to the filled length on read."""

from __future__ import annotations

import mlx.core as mx

__all__ = ["KVCache", "CacheFullError"]


class CacheFullError(ValueError):
    """More positions were fed than the model's context window holds."""


class KVCache:
    """keys/values [B, H_kv, capacity, hd]; grows by ``step`` up to ``max_len`` (the context window)."""

    def __init__(self, batch_size: int, kv_heads: int, head_dim: int, max_len: int, dtype: mx.Dtype, step: int = 256):
        self.shape = (batch_size, kv_heads, 0, head_dim)
        self.max_len, self.dtype, self.step = max_len, dtype, max(1, min(step, max_len))
        self.keys: mx.array | None = None
        self.values: mx.array | None = None
        self.offset = 0

    def _grow(self, needed: int) -> None:
        cap = 0 if self.keys is None else self.keys.shape[2]
        if needed <= cap:
            return
        if needed > self.max_len:
            raise CacheFullError(f"context window is {self.max_len} positions; {needed} were requested")
        new_cap = min(self.max_len, ((needed + self.step - 1) // self.step) * self.step)
        B, H, _, D = self.shape
        shape = (B, H, new_cap - cap, D)
        if self.keys is None:  # two distinct buffers: slice updates may write in place
            self.keys, self.values = mx.zeros(shape, self.dtype), mx.zeros(shape, self.dtype)
        else:
            self.keys = mx.concatenate([self.keys, mx.zeros(shape, self.dtype)], axis=2)
            self.values = mx.concatenate([self.values, mx.zeros(shape, self.dtype)], axis=2)

    def update_and_fetch(self, k: mx.array, v: mx.array) -> tuple[mx.array, mx.array]:
        """Store k/v [B, H_kv, S, hd] at offset..offset+S; return every filled slot [B, H_kv, offset+S, hd]."""
        S = k.shape[2]
        start = self.offset
        self._grow(start + S)
        self.keys[:, :, start : start + S, :] = k.astype(self.dtype)
        self.values[:, :, start : start + S, :] = v.astype(self.dtype)
        self.offset = start + S
        return self.keys[:, :, : self.offset, :], self.values[:, :, : self.offset, :]

    @property
    def state(self) -> list[mx.array]:
        return [] if self.keys is None else [self.keys, self.values]
