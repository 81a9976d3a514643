"""A small float64 numpy CSM forward: a second, independent oracle next to the transformers fixture,
usable on any prompt (padding, batches) and free of float32 rounding.

Written from spec/csm.md §1–2 independently of csm_mlx (interleaved RoPE by explicit pairs, GQA by
repeat-interleave, explicit boolean masks).
"""

from __future__ import annotations

import numpy as np
from csm_core.config import CSMConfig, LlamaConfig


def _rms(x, scale, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * scale


def _rope(x, pos, inv_freq):
    """x [S, H, hd], pos [S]: rotate interleaved pairs (2i, 2i+1)."""
    ang = pos[:, None].astype(np.float64) * inv_freq[None, :].astype(np.float64)  # [S, hd/2]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * c - x1 * s
    out[..., 1::2] = x1 * c + x0 * s
    return out


def transformer(w, prefix: str, cfg: LlamaConfig, x: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """x [S, D] at positions 0..S-1, allowed [S, S] bool → normed [S, D]."""
    S = x.shape[0]
    H, KV, hd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    inv = cfg.inv_freq()
    pos = np.arange(S)
    for i in range(cfg.num_layers):
        p = f"{prefix}.layers.{i}."
        n = _rms(x, w[p + "sa_norm.scale"], cfg.norm_eps)
        q = _rope((n @ w[p + "attn.q_proj.weight"].T).reshape(S, H, hd), pos, inv)
        k = _rope((n @ w[p + "attn.k_proj.weight"].T).reshape(S, KV, hd), pos, inv)
        v = (n @ w[p + "attn.v_proj.weight"].T).reshape(S, KV, hd)
        k = np.repeat(k, H // KV, axis=1)
        v = np.repeat(v, H // KV, axis=1)
        sc = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(hd)
        sc = np.where(allowed[None], sc, -np.inf)
        sc = np.exp(sc - sc.max(-1, keepdims=True))
        sc /= sc.sum(-1, keepdims=True)
        att = np.einsum("hqk,khd->qhd", sc, v).reshape(S, H * hd)
        h = x + att @ w[p + "attn.output_proj.weight"].T
        n = _rms(h, w[p + "mlp_norm.scale"], cfg.norm_eps)
        g = n @ w[p + "mlp.w1.weight"].T
        x = h + ((g / (1 + np.exp(-g))) * (n @ w[p + "mlp.w3.weight"].T)) @ w[p + "mlp.w2.weight"].T
    return _rms(x, w[f"{prefix}.norm.scale"], cfg.norm_eps)


def embed(w, config: CSMConfig, tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """tokens/mask [S, K+1] → [S, Db]."""
    K, V = config.audio_num_codebooks, config.audio_vocab_size
    out = w["text_embeddings.weight"][np.where(mask[:, K], tokens[:, K], 0)] * mask[:, K:]
    for k in range(K):
        out = out + w["audio_embeddings.weight"][np.where(mask[:, k], tokens[:, k], 0) + k * V] * mask[:, k : k + 1]
    return out


def backbone_last(w, config: CSMConfig, tokens, mask) -> np.ndarray:
    """float64 weights; one sequence tokens/mask [S, K+1] → normed hidden at the last position [Db]."""
    S = tokens.shape[0]
    return transformer(w, "backbone", config.backbone, embed(w, config, tokens, mask), np.tril(np.ones((S, S), bool)))[-1]


def depth(w, config: CSMConfig, last: np.ndarray, codes) -> np.ndarray:
    """Decoder fed [last, c0, .., c_{n-1}] → logits [n, V] for codebooks 1..n."""
    V = config.audio_vocab_size
    x = [last] + [w["audio_embeddings.weight"][codes[i] + i * V] for i in range(len(codes))]
    x = np.stack(x) @ w["projection.weight"].T
    n = x.shape[0]
    d = transformer(w, "decoder", config.decoder, x, np.tril(np.ones((n, n), bool)))
    return np.stack([d[i] @ w["audio_head"][i - 1] for i in range(1, n)])


def teacher_forced(w, config: CSMConfig, tokens, mask, codes):
    """One sequence: tokens/mask [S, K+1], codes [K] → (c0 logits [V], depth logits [K-1, V])."""
    w = {k: v.astype(np.float64) for k, v in w.items()}
    K = config.audio_num_codebooks
    last = backbone_last(w, config, tokens, mask)
    return w["codebook0_head.weight"] @ last, depth(w, config, last, codes[: K - 1])


def greedy_frames(w, config: CSMConfig, tokens, mask, n: int) -> np.ndarray:
    """n greedy frames (uncached full passes), codes >= 2048 masked → [n, K]."""
    w = {k: v.astype(np.float64) for k, v in w.items()}
    K = config.audio_num_codebooks
    frames = []
    for _ in range(n):
        last = backbone_last(w, config, tokens, mask)
        codes = [int(np.argmax((w["codebook0_head.weight"] @ last)[:2048]))]
        for i in range(1, K):
            codes.append(int(np.argmax(depth(w, config, last, codes)[i - 1][:2048])))
        frames.append(codes)
        row = np.zeros((1, K + 1), np.int64)
        row[0, :K] = codes
        mrow = np.zeros((1, K + 1), bool)
        mrow[0, :K] = True
        tokens, mask = np.concatenate([tokens, row]), np.concatenate([mask, mrow])
    return np.array(frames, np.int32)


def tiny_prompt(config: CSMConfig, seed: int = 0, n_text: int = 5, n_audio: int = 4):
    """[S, K+1] tokens/mask: text frames, audio frames (incl. an EOS frame), text frames."""
    rng = np.random.default_rng(seed)
    K = config.audio_num_codebooks
    rows, masks = [], []
    for kind, n in (("text", n_text), ("audio", n_audio), ("text", n_text)):
        for j in range(n):
            r = np.zeros(K + 1, np.int64)
            m = np.zeros(K + 1, bool)
            if kind == "text":
                r[K] = rng.integers(0, config.text_vocab_size)
                m[K] = True
            else:
                if j < n - 1:
                    r[:K] = rng.integers(0, 2048, K)
                m[:K] = True
            rows.append(r)
            masks.append(m)
    return np.stack(rows), np.stack(masks)
