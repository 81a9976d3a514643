"""Mimi's 8-layer transformer (spec/mimi.md §3): pre-norm LayerNorm, causal attention over a
window of `context` steps, interleaved RoPE, exact-erf GELU MLP, LayerScale, no biases.

One code path serves whole clips and streaming: a call takes the next n steps and a state (the
absolute position and, per layer, the keys/values of the last context − 1 steps). Each query at
absolute step i sees keys j with 0 <= i − j < context through an explicit mask, so streaming in
chunks of any size matches the whole clip (moshi's 250-slot ring does not; spec §7).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from csm_core.config import MimiConfig

from .ops import gelu, layer_norm, matmul

__all__ = ["Transformer", "TransformerState"]

_QUERY_BLOCK = 256  # queries per attention block: bounds the score buffer on long clips


@dataclass
class TransformerState:
    """Streaming state: steps seen so far and per-layer keys/values [H, m, head_dim], m < context."""

    offset: int = 0
    keys: list[np.ndarray] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)


class _Layer:
    def __init__(self, w: Mapping[str, np.ndarray], p: str, config: MimiConfig):
        d = config.dimension
        self.heads = config.num_heads
        self.head_dim = d // config.num_heads
        self.eps = config.norm_eps
        f32 = lambda a: np.ascontiguousarray(np.asarray(a, np.float32))  # noqa: E731
        self.w_in = f32(w[f"{p}.self_attn.in_proj_weight"].T)  # [3d, d] -> [d, 3d]; rows q|k|v (head, dim)
        self.w_out = f32(w[f"{p}.self_attn.out_proj.weight"].T)  # [d, d] -> [d_in, d_out]
        self.w1 = f32(w[f"{p}.linear1.weight"].T)  # [ff, d] -> [d, ff]
        self.w2 = f32(w[f"{p}.linear2.weight"].T)  # [d, ff] -> [ff, d]
        self.norm1 = (f32(w[f"{p}.norm1.weight"]), f32(w[f"{p}.norm1.bias"]))
        self.norm2 = (f32(w[f"{p}.norm2.weight"]), f32(w[f"{p}.norm2.bias"]))
        self.ls1 = f32(w[f"{p}.layer_scale_1.scale"])
        self.ls2 = f32(w[f"{p}.layer_scale_2.scale"])


class Transformer:
    def __init__(self, config: MimiConfig, w: Mapping[str, np.ndarray], prefix: str):
        self.config = config
        self.context = config.context
        self.layers = [
            _Layer(w, f"{prefix}.transformer.layers.{i}", config) for i in range(config.num_transformer_layers)
        ]
        hd = config.dimension // config.num_heads
        # moshi's RoPE tables are float32 throughout: freqs, angles, cos/sin
        self.freqs = np.exp(
            np.arange(hd // 2, dtype=np.float32) * np.float32(-math.log(config.rope_max_period) * 2 / hd)
        ).astype(np.float32)
        self.scale = np.float32(1.0 / math.sqrt(hd))

    def init_state(self) -> TransformerState:
        return TransformerState()

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Whole clip: x [T, d] -> [T, d]."""
        return self.step(x, self.init_state())[0]

    def step(self, x: np.ndarray, state: TransformerState) -> tuple[np.ndarray, TransformerState]:
        """The next n steps x [n, d] -> ([n, d], new state)."""
        n = x.shape[0]
        pos = np.arange(state.offset, state.offset + n, dtype=np.float32)
        angle = pos[:, None] * self.freqs[None, :]  # [n, hd/2]
        cos, sin = np.cos(angle)[:, None, :], np.sin(angle)[:, None, :]  # [n, 1, hd/2]
        new = TransformerState(offset=state.offset + n)
        x = np.array(x, np.float32)
        for i, layer in enumerate(self.layers):
            past_k = state.keys[i] if state.keys else None
            past_v = state.values[i] if state.values else None
            h = layer_norm(x, *layer.norm1, layer.eps)
            a, k_keep, v_keep = self._attention(layer, h, cos, sin, past_k, past_v)
            x += layer.ls1 * a
            h = layer_norm(x, *layer.norm2, layer.eps)
            x += layer.ls2 * matmul(gelu(matmul(h, layer.w1)), layer.w2)
            new.keys.append(k_keep)
            new.values.append(v_keep)
        return x, new

    def _attention(self, layer: _Layer, h, cos, sin, past_k, past_v):
        n, d = h.shape
        H, hd = layer.heads, layer.head_dim
        qkv = matmul(h, layer.w_in)  # [n, 3d]
        q = _rope(qkv[:, :d].reshape(n, H, hd), cos, sin).transpose(1, 0, 2)  # [H, n, hd]
        k = _rope(qkv[:, d : 2 * d].reshape(n, H, hd), cos, sin).transpose(1, 0, 2)
        v = qkv[:, 2 * d :].reshape(n, H, hd).transpose(1, 0, 2)
        if past_k is not None and past_k.shape[1]:
            k = np.concatenate([past_k, k], axis=1)  # [H, m+n, hd], cached steps first
            v = np.concatenate([past_v, v], axis=1)
        else:
            k, v = np.ascontiguousarray(k), np.ascontiguousarray(v)
        m = k.shape[1] - n  # cached steps before this chunk
        q = q * self.scale
        out = np.empty((n, H, hd), np.float32)
        for a in range(0, n, _QUERY_BLOCK):
            b = min(a + _QUERY_BLOCK, n)
            lo = max(0, a + m - self.context + 1)  # oldest key the first query of the block sees
            scores = q[:, a:b] @ k[:, lo : b + m].transpose(0, 2, 1)  # [H, b−a, keys]
            delta = (np.arange(a, b)[:, None] + m) - np.arange(lo, b + m)[None, :]
            scores[:, (delta < 0) | (delta >= self.context)] = -np.inf
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            out[a:b] = (scores @ v[:, lo : b + m]).transpose(1, 0, 2)
        keep = max(0, k.shape[1] - (self.context - 1))
        return matmul(out.reshape(n, d), layer.w_out), k[:, keep:].copy(), v[:, keep:].copy()


def _rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Interleaved RoPE on x [n, H, hd]: pairs (2m, 2m+1) rotate by position·freq_m."""
    xr, xi = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = xr * cos - xi * sin
    out[..., 1::2] = xr * sin + xi * cos
    return out
