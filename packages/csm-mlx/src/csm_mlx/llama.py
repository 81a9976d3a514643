"""The torchtune llama3_2 transformer in MLX, with the canonical (original Sesame) attribute names.

A layer: h = x + output_proj(Attn(sa_norm(x))); out = h + w2(silu(w1 n) * w3 n), n = mlp_norm(h).
RoPE uses llama3-scaled frequencies on interleaved pairs (2i, 2i+1) = ``mx.fast.rope(traditional=True)``.
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn
from csm_core.config import LlamaConfig

from .cache import KVCache

__all__ = ["RMSNorm", "Attention", "MLP", "TransformerBlock", "Transformer", "rope_periods"]


def rope_periods(cfg: LlamaConfig) -> mx.array:
    """float32 [head_dim/2]: what ``mx.fast.rope(freqs=...)`` wants, i.e. 1 / the llama3 inv_freq."""
    return mx.array(1.0 / cfg.inv_freq().astype("float64"), dtype=mx.float32)


class RMSNorm(nn.Module):
    """x * rsqrt(mean(x²) + eps) * scale, accumulated in float32 by ``mx.fast.rms_norm``."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.scale = mx.ones((dim,))
        self.eps = eps

    def __call__(self, x: mx.array) -> mx.array:
        return mx.fast.rms_norm(x, self.scale, self.eps)


class Attention(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        d, hd = cfg.embed_dim, cfg.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, hd
        self.scale = 1.0 / math.sqrt(hd)
        self.q_proj = nn.Linear(d, cfg.num_heads * hd, bias=False)
        self.k_proj = nn.Linear(d, cfg.kv_dim, bias=False)
        self.v_proj = nn.Linear(d, cfg.kv_dim, bias=False)
        self.output_proj = nn.Linear(cfg.num_heads * hd, d, bias=False)
        self._periods = rope_periods(cfg)  # [hd/2], not a parameter (leading underscore)

    def __call__(self, x: mx.array, cache: KVCache, mask: mx.array | str | None) -> mx.array:
        B, S, _ = x.shape
        # [B, S, H*hd] -> [B, H, S, hd]
        q = self.q_proj(x).reshape(B, S, self.num_heads, self.head_dim).transpose(0, 2, 1, 3)
        k = self.k_proj(x).reshape(B, S, self.num_kv_heads, self.head_dim).transpose(0, 2, 1, 3)
        v = self.v_proj(x).reshape(B, S, self.num_kv_heads, self.head_dim).transpose(0, 2, 1, 3)
        pos = cache.offset
        q = mx.fast.rope(q, self.head_dim, traditional=True, base=None, scale=1.0, offset=pos, freqs=self._periods)
        k = mx.fast.rope(k, self.head_dim, traditional=True, base=None, scale=1.0, offset=pos, freqs=self._periods)
        k, v = cache.update_and_fetch(k, v)
        # GQA: SDPA takes the kv heads untiled (kv head j serves q heads j*g .. j*g+g-1).
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale, mask=mask)
        return self.output_proj(out.transpose(0, 2, 1, 3).reshape(B, S, -1))


class MLP(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.embed_dim, cfg.intermediate_dim, bias=False)  # gate
        self.w2 = nn.Linear(cfg.intermediate_dim, cfg.embed_dim, bias=False)  # down
        self.w3 = nn.Linear(cfg.embed_dim, cfg.intermediate_dim, bias=False)  # up

    def __call__(self, x: mx.array) -> mx.array:
        return self.w2(nn.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.sa_norm = RMSNorm(cfg.embed_dim, cfg.norm_eps)
        self.mlp_norm = RMSNorm(cfg.embed_dim, cfg.norm_eps)

    def __call__(self, x: mx.array, cache: KVCache, mask: mx.array | str | None) -> mx.array:
        h = x + self.attn(self.sa_norm(x), cache, mask)
        return h + self.mlp(self.mlp_norm(h))


class Transformer(nn.Module):
    """Layers + final norm; no embeddings and no output layer (torchtune Identity)."""

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.config = cfg
        self.layers = [TransformerBlock(cfg) for _ in range(cfg.num_layers)]
        self.norm = RMSNorm(cfg.embed_dim, cfg.norm_eps)

    def make_cache(self, batch_size: int, capacity: int, dtype: mx.Dtype, step: int = 256) -> list[KVCache]:
        c = self.config
        return [KVCache(batch_size, c.num_kv_heads, c.head_dim, capacity, dtype, step) for _ in self.layers]

    def __call__(self, x: mx.array, cache: list[KVCache], mask: mx.array | str | None) -> mx.array:
        """x [B, S, D] at positions cache.offset.. → normed hidden [B, S, D]."""
        for layer, c in zip(self.layers, cache):
            x = layer(x, c, mask)
        return self.norm(x)
