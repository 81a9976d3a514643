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


class SlotCache:
    """KV caches for `slots` independent rows (continuous batching), every layer allocated once:
    keys and values [slots, H_kv, window, hd] each. Memory: layers · 2 · H_kv · hd · bytes(dtype)
    per slot per position — CSM-1B's backbone (16 layers, 8 kv heads of 64) holds 32 KiB per
    position in bf16 (64 KiB in fp32), 64 MiB per slot over the 2048-position window, 16 GiB for
    256 slots; it grows linearly with slots × window and does not depend on what the slots hold."""

    def __init__(self, layers: int, slots: int, kv_heads: int, head_dim: int, window: int, dtype: mx.Dtype):
        shape = (slots, kv_heads, window, head_dim)
        self.slots, self.window, self.dtype = slots, window, dtype
        self.keys = [mx.zeros(shape, dtype) for _ in range(layers)]
        self.values = [mx.zeros(shape, dtype) for _ in range(layers)]
        mx.eval(self.keys, self.values)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.keys + self.values)

    @property
    def state(self) -> list[mx.array]:
        return self.keys + self.values

    def views(self, plan: "SlotPlan") -> list["SlotLayerView"]:
        return [SlotLayerView(self, i, plan) for i in range(len(self.keys))]


class SlotPlan:
    """Where one backbone call's rows live in a SlotCache.

    The call runs m rows × S query positions. Row r is slot ``lo + r`` (``rows`` None: a range of
    slots, read as a slice) or slot ``rows[r]`` (gathered). ``offset`` int32 [m]: each row's first
    position (RoPE). The new keys/values at flat query indices ``select`` (all when None) are written
    to (``write_slot``, ``write_pos``); attention then reads positions 0..L-1 of the rows' slots.
    """

    def __init__(self, offset, write_slot, write_pos, select, L: int, lo: int | None = None, hi: int | None = None, rows=None):
        self.offset, self.write_slot, self.write_pos, self.select = offset, write_slot, write_pos, select
        self.L, self.lo, self.hi, self.rows = L, lo, hi, rows


class SlotLayerView:
    """One layer of a SlotCache as a SlotPlan's rows see it (the llama Attention's cache object)."""

    def __init__(self, cache: SlotCache, layer: int, plan: SlotPlan):
        self.cache, self.layer, self.plan = cache, layer, plan
        self.offset = plan.offset

    def update_and_fetch(self, k: mx.array, v: mx.array) -> tuple[mx.array, mx.array]:
        """Scatter the real rows of k/v [m, H_kv, S, hd] into their slots; return [m, H_kv, L, hd]."""
        p, c, i = self.plan, self.cache, self.layer
        out = []
        for store, new in ((c.keys, k), (c.values, v)):
            m, H, S, hd = new.shape
            if p.select is None and S == 1:
                rows = new[:, :, 0]  # [m, H, hd]
            else:
                rows = new.transpose(0, 2, 1, 3).reshape(m * S, H, hd)
                if p.select is not None:
                    rows = rows[p.select]
            store[i][p.write_slot, :, p.write_pos] = rows.astype(c.dtype)  # scatter, in place
            full = store[i]
            out.append(full[p.lo : p.hi, :, : p.L] if p.rows is None else mx.take(full[:, :, : p.L], p.rows, axis=0))
        return out[0], out[1]
