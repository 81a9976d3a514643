"""Split residual vector quantizer (spec/mimi.md §4): a semantic and an acoustic RVQ that both quantise
the same latent, each with its own 1x1 input/output projections."""

from __future__ import annotations

from typing import Mapping

import mlx.core as mx
import numpy as np
from csm_core.config import MimiConfig

__all__ = ["SplitRVQ"]


class _RVQ:
    def __init__(self, w: Mapping[str, np.ndarray], prefix: str, n_q: int):
        f32 = lambda a: np.ascontiguousarray(np.asarray(a, np.float32))  # noqa: E731
        self.input_proj = mx.array(f32(w[f"{prefix}.input_proj.weight"][:, :, 0].T))  # [cd, d, 1] -> [d, cd]
        self.output_proj = mx.array(f32(w[f"{prefix}.output_proj.weight"][:, :, 0].T))  # [d, cd, 1] -> [cd, d]
        books = []
        for i in range(n_q):
            cb = f"{prefix}.vq.layers.{i}._codebook"
            usage = np.maximum(np.asarray(w[f"{cb}.cluster_usage"], np.float32), np.float32(1e-5))
            books.append(f32(np.asarray(w[f"{cb}.embedding_sum"], np.float32) / usage[:, None]))
        self.codebooks = mx.array(np.stack(books))  # [n_q, bins, cd]
        self.half_norms = 0.5 * (self.codebooks * self.codebooks).sum(-1)  # [n_q, bins]

    def encode(self, x: mx.array, n_q: int) -> mx.array:
        """x [T, d] → codes int32 [n_q, T]: nearest codeword (argmin ‖E‖²/2 − r·E), then subtract it."""
        r = x @ self.input_proj  # [T, cd]
        codes = []
        for i in range(n_q):
            c = mx.argmin(self.half_norms[i] - r @ self.codebooks[i].T, axis=-1)  # [T]
            codes.append(c)
            r = r - self.codebooks[i][c]
        return mx.stack(codes).astype(mx.int32)

    def decode(self, codes: mx.array) -> mx.array:
        """codes [n, T] → [T, d]: Σ codewords then the output projection."""
        acc = self.codebooks[0][codes[0]]
        for i in range(1, codes.shape[0]):
            acc = acc + self.codebooks[i][codes[i]]
        return acc @ self.output_proj


class SplitRVQ:
    def __init__(self, config: MimiConfig, w: Mapping[str, np.ndarray]):
        self.n_semantic = config.num_semantic
        self.first = _RVQ(w, "quantizer.rvq_first", config.num_semantic)
        self.rest = _RVQ(w, "quantizer.rvq_rest", config.num_codebooks - config.num_semantic)

    def encode(self, x: mx.array, num_codebooks: int) -> mx.array:
        """latent [T, d] → codes int32 [K, T]."""
        codes = self.first.encode(x, min(num_codebooks, self.n_semantic))
        if num_codebooks > self.n_semantic:
            codes = mx.concatenate([codes, self.rest.encode(x, num_codebooks - self.n_semantic)])
        return codes

    def decode(self, codes: mx.array) -> mx.array:
        """codes [K, T] (any K >= 1: the sum is truncated) → latent [T, d]."""
        z = self.first.decode(codes[: self.n_semantic])
        if codes.shape[0] > self.n_semantic:
            z = z + self.rest.decode(codes[self.n_semantic :])
        return z
