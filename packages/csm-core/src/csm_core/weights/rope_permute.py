"""q/k row permutations between interleaved RoPE (Sesame, Kyutai) and half-split RoPE (Hugging Face).

Within each head of size d, interleaved RoPE rotates row pairs (2i, 2i+1); half-split
(`rotate_half`) rotates (i, i + d/2). Converting a q/k projection moves row 2i+p to p·d/2 + i
(evens first, then odds), which keeps every attention score identical.
"""

from __future__ import annotations

import numpy as np

from .errors import CheckpointError

__all__ = ["interleaved_to_half", "half_to_interleaved"]


def _check(w: np.ndarray, num_heads: int, head_dim: int, name: str) -> None:
    if w.ndim != 2 or w.shape[0] != num_heads * head_dim or head_dim % 2:
        raise CheckpointError(
            f"{name}: cannot permute RoPE rows of shape {w.shape} for {num_heads} heads x {head_dim} dims "
            f"(expected [{num_heads * head_dim}, in_features] and an even head_dim)"
        )


def interleaved_to_half(w: np.ndarray, num_heads: int, head_dim: int, name: str = "q/k projection") -> np.ndarray:
    """[H·d, D] interleaved -> half-split: row h·d + 2i+p -> h·d + p·d/2 + i."""
    _check(w, num_heads, head_dim, name)
    # [H, d/2, 2, D] -> [H, 2, d/2, D]
    return np.ascontiguousarray(w.reshape(num_heads, head_dim // 2, 2, -1).transpose(0, 2, 1, 3)).reshape(w.shape)


def half_to_interleaved(w: np.ndarray, num_heads: int, head_dim: int, name: str = "q/k projection") -> np.ndarray:
    """[H·d, D] half-split -> interleaved: row h·d + p·d/2 + i -> h·d + 2i+p (inverse of interleaved_to_half)."""
    _check(w, num_heads, head_dim, name)
    # [H, 2, d/2, D] -> [H, d/2, 2, D]
    return np.ascontiguousarray(w.reshape(num_heads, 2, head_dim // 2, -1).transpose(0, 2, 1, 3)).reshape(w.shape)
