"""Split residual vector quantizer (spec/mimi.md §4): one semantic RVQ and one acoustic RVQ that
both quantise the same latent, each with its own 1x1 input/output projections."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from csm_core.config import MimiConfig

from .linalg import matmul

__all__ = ["SplitRVQ"]


class _RVQ:
    def __init__(self, w: Mapping[str, np.ndarray], prefix: str, n_q: int):
        f32 = lambda a: np.ascontiguousarray(np.asarray(a, np.float32))  # noqa: E731
        self.input_proj = f32(w[f"{prefix}.input_proj.weight"][:, :, 0].T)  # [cd, d, 1] -> [d, cd]
        self.output_proj = f32(w[f"{prefix}.output_proj.weight"][:, :, 0].T)  # [d, cd, 1] -> [cd, d]
        self.codebooks: list[np.ndarray] = []  # each [bins, cd]
        for i in range(n_q):
            cb = f"{prefix}.vq.layers.{i}._codebook"
            usage = np.maximum(np.asarray(w[f"{cb}.cluster_usage"], np.float32), np.float32(1e-5))
            self.codebooks.append(f32(np.asarray(w[f"{cb}.embedding_sum"], np.float32) / usage[:, None]))
        self.codebooks_t = [np.ascontiguousarray(e.T) for e in self.codebooks]  # [cd, bins]
        self.half_norms = [0.5 * np.einsum("ij,ij->i", e, e) for e in self.codebooks]  # [bins]

    def encode(self, x: np.ndarray, n_q: int) -> np.ndarray:
        """x [T, d] -> codes [n_q, T]: nearest codeword (‖E‖²/2 − r·E, first index on ties), then subtract."""
        r = x @ self.input_proj  # [T, cd]
        codes = np.empty((n_q, x.shape[0]), np.int64)
        for i in range(n_q):
            dist = self.half_norms[i] - r @ self.codebooks_t[i]  # [T, bins]
            c = np.argmin(dist, axis=-1)
            codes[i] = c
            r -= self.codebooks[i][c]
        return codes

    def decode(self, codes: np.ndarray, paired: bool = False) -> np.ndarray:
        """codes [n, T] -> [T, d]: Σ codewords, then the output projection."""
        acc = np.zeros((codes.shape[1], self.input_proj.shape[1]), np.float32)
        for i, c in enumerate(codes):
            acc += self.codebooks[i][c]
        return matmul(acc, self.output_proj, paired)


class SplitRVQ:
    def __init__(self, config: MimiConfig, w: Mapping[str, np.ndarray]):
        self.n_semantic = config.num_semantic
        self.first = _RVQ(w, "quantizer.rvq_first", config.num_semantic)
        self.rest = _RVQ(w, "quantizer.rvq_rest", config.num_codebooks - config.num_semantic)

    def encode(self, x: np.ndarray, num_codebooks: int) -> np.ndarray:
        """latent [T, d] -> codes [K, T] int64."""
        codes = [self.first.encode(x, min(num_codebooks, self.n_semantic))]
        if num_codebooks > self.n_semantic:
            codes.append(self.rest.encode(x, num_codebooks - self.n_semantic))
        return np.concatenate(codes)

    def decode(self, codes: np.ndarray, paired: bool = False) -> np.ndarray:
        """codes [K, T] (any K >= 1: the sum is truncated) -> latent [T, d]."""
        z = self.first.decode(codes[: self.n_semantic], paired)
        if codes.shape[0] > self.n_semantic:
            z += self.rest.decode(codes[self.n_semantic :], paired)
        return z
