"""Mimi's transformer (spec/mimi.md §3) in MLX: pre-norm LayerNorm, attention over a causal window of
``context`` steps with an explicit mask (query i sees key j iff 0 <= i − j < context), interleaved
RoPE, exact-erf GELU MLP, LayerScale, no biases.

One path for whole clips and streaming: a call takes the next n steps and a state (absolute offset,
and per layer the keys/values of the last context − 1 steps), so chunks of any size equal the clip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import mlx.core as mx
import numpy as np
from csm_core.config import MimiConfig

__all__ = ["Transformer", "TransformerState", "RowsState", "gelu"]

_QUERY_BLOCK = 256  # queries per attention call: bounds the [H, q, k] score buffer on long clips


def gelu(x: mx.array) -> mx.array:
    """Exact GELU x·Φ(x) (erf form, not moshi_mlx's tanh approximation)."""
    return x * (1.0 + mx.erf(x * (1.0 / math.sqrt(2.0)))) * 0.5


@dataclass
class TransformerState:
    offset: int = 0
    keys: list[mx.array] = field(default_factory=list)  # per layer [1, H, m, hd], m < context
    values: list[mx.array] = field(default_factory=list)


@dataclass
class RowsState:
    """Independent streams advanced together: per row its offset (host int64 [R]); per layer the
    keys/values [R, H, context − 1, hd] of each row's last context − 1 steps, right-aligned (the
    entries before a young row's first step are zeros and masked out)."""

    offsets: np.ndarray
    keys: list[mx.array]
    values: list[mx.array]


class _Layer:
    def __init__(self, w: Mapping[str, np.ndarray], p: str):
        f = lambda name: mx.array(np.ascontiguousarray(w[f"{p}.{name}"], dtype=np.float32))  # noqa: E731
        self.in_proj = f("self_attn.in_proj_weight")  # [3d, d], rows q|k|v each (head, dim)
        self.out_proj = f("self_attn.out_proj.weight")  # [d, d]
        self.linear1 = f("linear1.weight")  # [ff, d]
        self.linear2 = f("linear2.weight")  # [d, ff]
        self.norm1 = (f("norm1.weight"), f("norm1.bias"))
        self.norm2 = (f("norm2.weight"), f("norm2.bias"))
        self.ls1 = f("layer_scale_1.scale")
        self.ls2 = f("layer_scale_2.scale")


class Transformer:
    def __init__(self, config: MimiConfig, w: Mapping[str, np.ndarray], prefix: str):
        self.context = config.context
        self.heads = config.num_heads
        self.head_dim = config.dimension // config.num_heads
        self.eps = config.norm_eps
        self.base = float(config.rope_max_period)
        self.layers = [_Layer(w, f"{prefix}.transformer.layers.{i}") for i in range(config.num_transformer_layers)]

    def init_state(self) -> TransformerState:
        return TransformerState()

    def forward(self, x: mx.array) -> mx.array:
        """Whole clip: x [1, T, d] → [1, T, d]."""
        return self.step(x, self.init_state())[0]

    def step(self, x: mx.array, state: TransformerState) -> tuple[mx.array, TransformerState]:
        """The next n steps x [1, n, d] → ([1, n, d], new state)."""
        new = TransformerState(offset=state.offset + x.shape[1])
        for i, layer in enumerate(self.layers):
            past = (state.keys[i], state.values[i]) if state.keys else None
            x, k, v = self._block(layer, x, lambda h: self._attention(layer, h, state.offset, past))
            new.keys.append(k)
            new.values.append(v)
        return x, new

    def init_rows_state(self, rows: int) -> RowsState:
        shape = (rows, self.heads, self.context - 1, self.head_dim)
        zeros = lambda: [mx.zeros(shape, mx.float32) for _ in self.layers]  # noqa: E731
        return RowsState(np.zeros(rows, np.int64), zeros(), zeros())

    def step_rows(self, x: mx.array, state: RowsState) -> tuple[mx.array, RowsState]:
        """The next n steps of each row's stream, x [R, n, d] → ([R, n, d], new state)."""
        mask, offsets = self.rows_inputs(state.offsets, x.shape[1])
        x, keys, values = self.step_rows_arrays(x, mask, offsets, state.keys, state.values)
        return x, RowsState(state.offsets + x.shape[1], keys, values)

    def rows_inputs(self, offsets: np.ndarray, n: int) -> tuple[mx.array, mx.array]:
        """The host-side inputs of n steps for rows at `offsets` (int64 [R]): the attention mask
        bool [R, 1, n, P + n] and the RoPE offsets int32 [R]."""
        P = self.context - 1
        # query i sits at buffer index P + i; key j is visible iff 0 <= P + i − j < context and j
        # holds a step of this row (j >= P − offset)
        delta = (np.arange(n)[:, None] + P) - np.arange(P + n)[None, :]
        young = np.arange(P + n)[None, None, :] >= (P - offsets)[:, None, None]
        mask = mx.array((((delta >= 0) & (delta < self.context))[None] & young)[:, None])
        return mask, mx.array(offsets.astype(np.int32))

    def step_rows_arrays(self, x: mx.array, mask: mx.array, offsets: mx.array, keys: list[mx.array],
                         values: list[mx.array]) -> tuple[mx.array, list[mx.array], list[mx.array]]:
        """`step_rows` on arrays alone (a pure function: it can be compiled): → (x, keys, values)."""
        new_k, new_v = [], []
        for i, layer in enumerate(self.layers):
            attend = lambda h: self._attention_rows(layer, h, offsets, keys[i], values[i], mask)  # noqa: E731
            x, k, v = self._block(layer, x, attend)
            new_k.append(k)
            new_v.append(v)
        return x, new_k, new_v

    def _block(self, layer: _Layer, x: mx.array, attend):
        """One layer: x + attention (attend(normed x) → out, keys, values), then x + MLP."""
        a, k, v = attend(mx.fast.layer_norm(x, *layer.norm1, self.eps))
        x = x + layer.ls1 * a
        h = mx.fast.layer_norm(x, *layer.norm2, self.eps)
        return x + layer.ls2 * (gelu(h @ layer.linear1.T) @ layer.linear2.T), k, v

    def _attention_rows(self, layer: _Layer, h: mx.array, offsets: mx.array, pk: mx.array, pv: mx.array, mask: mx.array):
        R, n, d = h.shape
        H, hd = self.heads, self.head_dim
        qkv = (h @ layer.in_proj.T).reshape(R, n, 3, H, hd).transpose(2, 0, 3, 1, 4)  # [3, R, H, n, hd]
        rope = lambda t: mx.fast.rope(t, hd, traditional=True, base=self.base, scale=1.0, offset=offsets)  # noqa: E731
        q = rope(qkv[0])
        k = mx.concatenate([pk, rope(qkv[1])], axis=2)  # [R, H, P + n, hd]
        v = mx.concatenate([pv, qkv[2]], axis=2)
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=1.0 / math.sqrt(hd), mask=mask)
        out = out.transpose(0, 2, 1, 3).reshape(R, n, d) @ layer.out_proj.T
        return out, k[:, :, n:], v[:, :, n:]

    def _attention(self, layer: _Layer, h: mx.array, offset: int, past):
        _, n, d = h.shape
        H, hd = self.heads, self.head_dim
        qkv = (h @ layer.in_proj.T).reshape(1, n, 3, H, hd).transpose(2, 0, 3, 1, 4)  # [3, 1, H, n, hd]
        rope = lambda t: mx.fast.rope(t, hd, traditional=True, base=self.base, scale=1.0, offset=offset)  # noqa: E731
        q, k, v = rope(qkv[0]), rope(qkv[1]), qkv[2]
        if past is not None and past[0].shape[2]:
            k = mx.concatenate([past[0], k], axis=2)
            v = mx.concatenate([past[1], v], axis=2)
        m = k.shape[2] - n  # cached steps before this chunk
        outs = []
        for a in range(0, n, _QUERY_BLOCK):
            b = min(a + _QUERY_BLOCK, n)
            lo = max(0, a + m - self.context + 1)  # oldest key the block's first query may see
            delta = (np.arange(a, b)[:, None] + m) - np.arange(lo, b + m)[None, :]
            mask = mx.array((delta >= 0) & (delta < self.context))
            outs.append(
                mx.fast.scaled_dot_product_attention(
                    q[:, :, a:b], k[:, :, lo : b + m], v[:, :, lo : b + m], scale=1.0 / math.sqrt(hd), mask=mask
                )
            )
        out = outs[0] if len(outs) == 1 else mx.concatenate(outs, axis=2)  # [1, H, n, hd]
        out = out.transpose(0, 2, 1, 3).reshape(1, n, d) @ layer.out_proj.T
        keep = max(0, k.shape[2] - (self.context - 1))
        return out, k[:, :, keep:], v[:, :, keep:]
