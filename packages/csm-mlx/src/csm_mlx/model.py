"""CSM in MLX: backbone + depth decoder, attribute names = canonical (original Sesame) weight names.

So ``model.load_weights(canonical_dict)`` is strict: every key of ``CSMConfig.weight_shapes()`` and no
other. The model maps (frames, caches) → hidden states and logits; sampling and the frame loop use it.
"""

from __future__ import annotations

from typing import Mapping

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from csm_core.config import CSMConfig
from csm_core.weights import CheckpointError, validate_weights

from .cache import KVCache
from .llama import Transformer
from .sampling import RowSampling, sample_rows

__all__ = ["CSMModel", "DTYPES", "resolve_dtype", "to_mx", "WeightsError"]

DTYPES = {"float32": mx.float32, "bfloat16": mx.bfloat16, "float16": mx.float16}
_ALIASES = {"fp32": "float32", "f32": "float32", "bf16": "bfloat16", "fp16": "float16", "f16": "float16"}


class WeightsError(ValueError):
    """A weight dict does not fit the model's configuration (missing, extra or misshapen tensors)."""


def resolve_dtype(dtype: str | mx.Dtype) -> mx.Dtype:
    if isinstance(dtype, mx.Dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"unsupported dtype {dtype}; expected one of {sorted(DTYPES)}")
        return dtype
    name = _ALIASES.get(str(dtype), str(dtype))
    if name not in DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}; expected one of {sorted(DTYPES)} (or fp32/bf16/fp16)")
    return DTYPES[name]


def to_mx(a, dtype: mx.Dtype | None = None) -> mx.array:
    """numpy (incl. ml_dtypes bfloat16) or mx array → mx array, optionally cast."""
    if not isinstance(a, mx.array):
        a = np.asarray(a)
        if a.dtype.name == "bfloat16":  # ml_dtypes: reinterpret the bits, numpy has no native bf16
            a = mx.array(a.view(np.uint16)).view(mx.bfloat16)
        else:
            a = mx.array(a)
    return a if dtype is None or a.dtype == dtype else a.astype(dtype)


class CSMModel(nn.Module):
    def __init__(self, config: CSMConfig):
        super().__init__()
        self.config = config
        b, d = config.backbone, config.decoder
        K, V = config.audio_num_codebooks, config.audio_vocab_size
        self.backbone = Transformer(b)
        self.decoder = Transformer(d)
        self.text_embeddings = nn.Embedding(config.text_vocab_size, b.embed_dim)
        self.audio_embeddings = nn.Embedding(V * K, b.embed_dim)  # code c of codebook k -> row c + V*k
        self.projection = nn.Linear(b.embed_dim, d.embed_dim, bias=False)
        self.codebook0_head = nn.Linear(b.embed_dim, V, bias=False)
        self.audio_head = mx.zeros((K - 1, d.embed_dim, V))  # applied as h @ audio_head[i-1]

    # ---- weights ----
    def load_canonical(self, weights: Mapping[str, object], dtype: str | mx.Dtype = "float32") -> "CSMModel":
        """Strictly load a canonical weight dict (numpy or mx arrays), cast to ``dtype``."""
        check_canonical(self.config, weights)
        dt = resolve_dtype(dtype)
        arrays = []
        for k, v in weights.items():
            arrays.append((k, to_mx(v, dt)))
            mx.eval(arrays[-1][1])  # one tensor at a time: the float32 staging copy is freed at once
        self.load_weights(arrays, strict=True)
        return self

    @property
    def dtype(self) -> mx.Dtype:
        return self.audio_head.dtype

    # ---- pieces of a frame ----
    def embed_frames(self, tokens: mx.array, mask: mx.array) -> mx.array:
        """tokens int32 / mask bool [B, S, K+1] → [B, S, Db]: the text embedding or the sum of the codebook embeddings."""
        K, V = self.config.audio_num_codebooks, self.config.audio_vocab_size
        tokens = mx.where(mask, tokens, 0)  # masked-out slots may hold anything (pad ids); never look them up
        text = self.text_embeddings(tokens[..., K]) * mask[..., K:].astype(self.dtype)  # [B, S, Db]
        offsets = mx.arange(K, dtype=mx.int32) * V
        audio = self.audio_embeddings(tokens[..., :K] + offsets)  # [B, S, K, Db]
        audio = (audio * mask[..., :K, None].astype(self.dtype)).sum(axis=2)
        return text + audio

    def embed_audio(self, codebook: int, codes: mx.array) -> mx.array:
        """codes [B] of one codebook → [B, 1, Db]."""
        return self.audio_embeddings(codes[:, None] + codebook * self.config.audio_vocab_size)

    def backbone_hidden(self, embeds: mx.array, cache: list[KVCache], mask) -> mx.array:
        return self.backbone(embeds, cache, mask)

    def c0_logits(self, last_h: mx.array) -> mx.array:
        """last_h [B, Db] → [B, V]."""
        return self.codebook0_head(last_h)

    def make_decoder_cache(self, batch_size: int) -> list[KVCache]:
        K = self.config.audio_num_codebooks
        return self.decoder.make_cache(batch_size, K, self.dtype, step=K)

    def decode_frame(self, last_h: mx.array, rows: RowSampling) -> mx.array:
        """The rest of a frame, lazily: sample c0, then 31 depth-decoder steps → int32 [B, K];
        row b is sampled with row b of ``rows`` (its parameters and random keys)."""
        K = self.config.audio_num_codebooks
        c = sample_rows(self.c0_logits(last_h), rows, 0)
        codes = [c]
        cache = self.make_decoder_cache(last_h.shape[0])
        # positions 0, 1: the backbone state and codebook 0; the decoder cache is fresh every frame
        x = mx.concatenate([last_h[:, None, :], self.embed_audio(0, c)], axis=1)
        h = self.decoder(self.projection(x), cache, "causal")
        for i in range(1, K):
            c = sample_rows(h[:, -1] @ self.audio_head[i - 1], rows, i)
            codes.append(c)
            if i < K - 1:
                h = self.decoder(self.projection(self.embed_audio(i, c)), cache, None)
        return mx.stack(codes, axis=1)

    def depth_logits(self, last_h: mx.array, codes: mx.array) -> mx.array:
        """Teacher forcing: last_h [B, Db], codes int32 [B, K] → logits [B, K-1, V] for codebooks 1..K-1."""
        K = self.config.audio_num_codebooks
        offsets = mx.arange(K - 1, dtype=mx.int32) * self.config.audio_vocab_size
        emb = self.audio_embeddings(codes[:, : K - 1] + offsets)  # [B, K-1, Db]
        x = self.projection(mx.concatenate([last_h[:, None, :], emb], axis=1))  # [B, K, Dd]
        h = self.decoder(x, self.make_decoder_cache(x.shape[0]), "causal")[:, 1:]  # [B, K-1, Dd]
        # h[:, i-1] @ audio_head[i-1] for each codebook i
        return mx.einsum("bkd,kdv->bkv", h, self.audio_head)


def check_canonical(config: CSMConfig, weights: Mapping[str, object]) -> None:
    """Raise WeightsError naming every missing, unexpected or misshapen tensor (csm_core's strict check)."""
    b, d = config.backbone_flavor, config.decoder_flavor
    try:
        validate_weights(config.weight_shapes(), weights, f"weights for backbone {b!r}, decoder {d!r}", check_finite=False)
    except CheckpointError as e:
        raise WeightsError(str(e)) from None
