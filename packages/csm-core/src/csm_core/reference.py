"""A readable float32 numpy forward of CSM: the reference every backend is tested against.

Follows spec/csm.md §1-2 (the official Sesame code): RMSNorm, interleaved llama3 RoPE, GQA
attention over a preallocated KV cache, SwiGLU; a backbone over frame embeddings, codebook 0 from
its last hidden state, then the depth decoder (cache reset every frame) for codebooks 1..K-1.

Clarity over speed, but every step is a matmul over whole rows, so tiny configs run frames in
milliseconds and CSM-1B runs (slowly) too.

    model = CSMReference(config, weights)         # canonical (Sesame-named) weights
    model.reset(batch_size=1, seed=0)
    codes = model.generate_frame(tokens, mask, SamplingParams(temperature=0))   # [B, K] int32
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from .config import CSMConfig, LlamaConfig
from .frame_inputs import check_frame_inputs, check_probe_codes
from .protocols import SamplingParams
from .sampling import sample

__all__ = ["CSMReference", "Transformer", "KVCache", "rms_norm", "rope_tables", "apply_rope"]


# ---- building blocks ----------------------------------------------------------------------------

def rms_norm(x: np.ndarray, scale: np.ndarray, eps: float) -> np.ndarray:
    """x · rsqrt(mean(x²) + eps) · scale over the last axis (all float32)."""
    ms = np.mean(np.square(x), axis=-1, keepdims=True)
    return (x / np.sqrt(ms + np.float32(eps))) * scale


def rope_tables(inv_freq: np.ndarray, max_seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin float32 [max_seq_len, head_dim/2] of angle position · inv_freq (fp32, as torchtune)."""
    angles = np.arange(max_seq_len, dtype=np.float32)[:, None] * inv_freq[None, :].astype(np.float32)
    return np.cos(angles), np.sin(angles)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Interleaved RoPE on x [B, H, S, hd] with cos/sin [S, hd/2]: pairs (2i, 2i+1) rotate together."""
    pairs = x.reshape(*x.shape[:-1], -1, 2)
    x0, x1 = pairs[..., 0], pairs[..., 1]
    out = np.stack([x0 * cos - x1 * sin, x1 * cos + x0 * sin], axis=-1)
    return out.reshape(x.shape)


def silu(x: np.ndarray) -> np.ndarray:
    return x / (np.float32(1) + np.exp(-x))


@dataclass
class KVCache:
    """Keys/values of one transformer for every layer, preallocated for max_len positions."""

    k: np.ndarray  # [L, B, Hkv, max_len, hd]
    v: np.ndarray  # [L, B, Hkv, max_len, hd]
    attendable: np.ndarray  # bool [B, max_len]: False for left padding (and unfilled slots)
    length: int = 0  # positions filled

    @property
    def max_len(self) -> int:
        return self.k.shape[3]


# ---- one llama transformer (no embeddings, no output layer) -------------------------------------

class Transformer:
    """torchtune llama3_2 decoder stack: layers of attention + SwiGLU, then the final RMSNorm."""

    def __init__(self, cfg: LlamaConfig, weights: Mapping[str, np.ndarray], prefix: str):
        self.cfg = cfg
        self.layers = [
            {suffix: weights[f"{prefix}.layers.{i}.{suffix}"] for suffix in cfg.layer_shapes()}
            for i in range(cfg.num_layers)
        ]
        self.norm = weights[f"{prefix}.norm.scale"]  # [D]
        self.cos, self.sin = rope_tables(cfg.inv_freq(), cfg.max_seq_len)  # [T, hd/2] each

    def new_cache(self, batch_size: int, max_len: int) -> KVCache:
        c = self.cfg
        shape = (c.num_layers, batch_size, c.num_kv_heads, max_len, c.head_dim)
        return KVCache(np.zeros(shape, np.float32), np.zeros(shape, np.float32), np.zeros((batch_size, max_len), bool))

    def forward(self, x: np.ndarray, cache: KVCache, attendable: np.ndarray | None = None) -> np.ndarray:
        """x [B, S, D] at positions cache.length .. +S → hidden [B, S, D] after the final norm.

        attendable bool [B, S]: False marks padding rows, which no other position attends to.
        """
        B, S, _ = x.shape
        start, end = cache.length, cache.length + S
        if end > cache.max_len:
            raise ValueError(f"sequence of {end} positions exceeds the KV cache of {cache.max_len}")
        cache.attendable[:, start:end] = True if attendable is None else attendable
        # allowed[b, q, t]: causal, and key t is attendable or is the query itself (so a padding
        # row still has one key and stays finite; its output is never used).
        q_pos = np.arange(start, end)[:, None]
        t_pos = np.arange(end)[None, :]
        allowed = (t_pos <= q_pos)[None] & (cache.attendable[:, None, :end] | (t_pos == q_pos)[None])  # [B, S, end]
        cos, sin = self.cos[start:end], self.sin[start:end]
        for i, w in enumerate(self.layers):
            h = rms_norm(x, w["sa_norm.scale"], self.cfg.norm_eps)
            x = x + self._attention(h, w, cache, i, start, end, cos, sin, allowed)
            h = rms_norm(x, w["mlp_norm.scale"], self.cfg.norm_eps)
            x = x + silu(h @ w["mlp.w1.weight"].T) * (h @ w["mlp.w3.weight"].T) @ w["mlp.w2.weight"].T
        cache.length = end
        return rms_norm(x, self.norm, self.cfg.norm_eps)

    def _attention(self, h, w, cache, layer, start, end, cos, sin, allowed) -> np.ndarray:
        c = self.cfg
        B, S, _ = h.shape
        H, Hkv, hd = c.num_heads, c.num_kv_heads, c.head_dim
        q = (h @ w["attn.q_proj.weight"].T).reshape(B, S, H, hd).transpose(0, 2, 1, 3)  # [B, H, S, hd]
        k = (h @ w["attn.k_proj.weight"].T).reshape(B, S, Hkv, hd).transpose(0, 2, 1, 3)  # [B, Hkv, S, hd]
        v = (h @ w["attn.v_proj.weight"].T).reshape(B, S, Hkv, hd).transpose(0, 2, 1, 3)
        cache.k[layer, :, :, start:end] = apply_rope(k, cos, sin)
        cache.v[layer, :, :, start:end] = v
        keys, values = cache.k[layer, :, :, :end], cache.v[layer, :, :, :end]  # [B, Hkv, T, hd]
        # GQA: kv head j serves q heads j·g .. j·g+g-1, so group q as [B, Hkv, g, S, hd].
        g = H // Hkv
        q = apply_rope(q, cos, sin).reshape(B, Hkv, g, S, hd)
        scores = q @ keys[:, :, None].swapaxes(-1, -2) / np.float32(np.sqrt(hd))  # [B, Hkv, g, S, T]
        scores = np.where(allowed[:, None, None], scores, np.float32(-np.inf))
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        probs = scores / scores.sum(-1, keepdims=True)
        out = (probs @ values[:, :, None]).reshape(B, H, S, hd)  # [B, H, S, hd]
        return out.transpose(0, 2, 1, 3).reshape(B, S, H * hd) @ w["attn.output_proj.weight"].T


# ---- CSM ------------------------------------------------------------------------------------------

class CSMReference:
    """The numpy reference CSM backend (FrameModel and LogitsProbe protocols)."""

    name = "reference"

    def __init__(self, config: CSMConfig, weights: Mapping[str, np.ndarray]):
        self.config = config
        self.weights = _checked_weights(config, weights)
        w = self.weights
        self.backbone = Transformer(config.backbone, w, "backbone")
        self.decoder = Transformer(config.decoder, w, "decoder")
        self.text_embeddings = w["text_embeddings.weight"]  # [text_vocab, Db]
        self.audio_embeddings = w["audio_embeddings.weight"]  # [V·K, Db], code c of codebook k at c + V·k
        self.projection = w["projection.weight"]  # [Dd, Db]
        self.codebook0_head = w["codebook0_head.weight"]  # [V, Db]
        self.audio_head = w["audio_head"]  # [K-1, Dd, V]
        self.reset(1)

    # ---- FrameModel ----
    def reset(self, batch_size: int = 1, seed: int | None = None) -> None:
        """Empty the backbone cache for a new batch; seed the sampler."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self._cache = self.backbone.new_cache(batch_size, self.config.backbone.max_seq_len)
        self._rng = np.random.default_rng(seed)

    @property
    def position(self) -> int:
        return self._cache.length

    @property
    def batch_size(self) -> int:
        return self._cache.k.shape[1]

    def generate_frame(self, tokens: np.ndarray, mask: np.ndarray, params: SamplingParams) -> np.ndarray:
        """Feed tokens/mask [B, S, K+1] at the current position; return codes [B, K] int32."""
        tokens, mask = check_frame_inputs(tokens, mask, self.config, batch_size=self.batch_size, position=self.position)
        h = self.backbone.forward(self.embed(tokens, mask), self._cache, attendable=mask.any(-1))
        last_h = h[:, -1]  # [B, Db]
        c0 = sample(last_h @ self.codebook0_head.T, params, self._rng)
        return self._decode_frame(last_h, c0, params)

    def _decode_frame(self, last_h: np.ndarray, c0: np.ndarray, params: SamplingParams) -> np.ndarray:
        K = self.config.audio_num_codebooks
        B = last_h.shape[0]
        codes = np.zeros((B, K), np.int32)
        codes[:, 0] = c0
        cache = self.decoder.new_cache(B, K + 1)  # reset every frame
        x = np.stack([last_h, self.audio_embedding(0, c0)], axis=1) @ self.projection.T  # [B, 2, Dd]
        for i in range(1, K):
            out = self.decoder.forward(x, cache)
            codes[:, i] = sample(out[:, -1] @ self.audio_head[i - 1], params, self._rng)
            x = self.audio_embedding(i, codes[:, i])[:, None] @ self.projection.T  # [B, 1, Dd]
        return codes

    # ---- LogitsProbe ----
    def teacher_forced_logits(
        self, tokens: np.ndarray, mask: np.ndarray, codes: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """From fresh caches (generation state untouched): c0 logits [B, V] at the last position and
        depth logits [B, K-1, V] with the decoder fed [h, c0..c_{K-2}] of `codes` [B, K]."""
        tokens, mask = check_frame_inputs(tokens, mask, self.config)
        K, V = self.config.audio_num_codebooks, self.config.audio_vocab_size
        codes = check_probe_codes(codes, self.config, tokens.shape[0])
        last_h = self.backbone_hidden(tokens, mask)[:, -1]  # [B, Db]
        c0_logits = last_h @ self.codebook0_head.T
        emb = np.stack([self.audio_embedding(i, codes[:, i]) for i in range(K - 1)], axis=1)  # [B, K-1, Db]
        x = np.concatenate([last_h[:, None], emb], axis=1) @ self.projection.T  # [B, K, Dd]
        out = self.decoder.forward(x, self.decoder.new_cache(tokens.shape[0], K + 1))
        depth = np.einsum("bkd,kdv->bkv", out[:, 1:], self.audio_head)  # position p uses head p-1
        return c0_logits.astype(np.float32), depth.astype(np.float32).reshape(-1, K - 1, V)

    def backbone_hidden(self, tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Backbone output [B, S, Db] (after the final norm) from a fresh cache."""
        tokens, mask = check_frame_inputs(tokens, mask, self.config)
        cache = self.backbone.new_cache(tokens.shape[0], self.config.backbone.max_seq_len)
        return self.backbone.forward(self.embed(tokens, mask), cache, attendable=mask.any(-1))

    # ---- embeddings ----
    def embed(self, tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Σ over the K+1 columns of (embedding ⊙ mask): [B, S, Db]."""
        K, V = self.config.audio_num_codebooks, self.config.audio_vocab_size
        tokens = np.where(mask, tokens, 0)  # unmasked entries may hold anything (e.g. pad ids)
        text = self.text_embeddings[tokens[..., K]] * mask[..., K, None]
        rows = tokens[..., :K] + V * np.arange(K)  # [B, S, K]
        audio = (self.audio_embeddings[rows] * mask[..., :K, None]).sum(axis=2)
        return (text + audio).astype(np.float32)

    def audio_embedding(self, codebook: int, codes: np.ndarray) -> np.ndarray:
        """Embeddings [B, Db] of codes [B] of one codebook."""
        return self.audio_embeddings[np.asarray(codes) + codebook * self.config.audio_vocab_size]


def _checked_weights(config: CSMConfig, weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """float32 copies of the canonical weights; a missing, extra or misshapen tensor fails by name."""
    expected = config.weight_shapes()
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    if missing or extra:
        raise KeyError(f"CSM weights: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                       f"unexpected {extra[:5]}{'...' if len(extra) > 5 else ''}")
    out = {}
    for name, shape in expected.items():
        w = np.asarray(weights[name])
        if w.shape != shape:
            raise ValueError(f"CSM weight {name}: shape {w.shape}, expected {shape}")
        out[name] = w if w.dtype == np.float32 else w.astype(np.float32)
    return out
