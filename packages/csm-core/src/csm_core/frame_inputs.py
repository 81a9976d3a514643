"""Checks of what a caller hands a FrameModel (tokens/mask [B, S, K+1]) or a LogitsProbe (codes
[B, K]), shared by every backend (csm-cpu, csm-mlx, the numpy reference) so each gives the same
clear error for the same bad input, before any cache changes."""

from __future__ import annotations

from typing import Any

import numpy as np

from .config import CSMConfig

__all__ = ["check_frame_inputs", "check_probe_codes", "check_slot_prompt", "check_token_values"]


def check_frame_inputs(
    tokens: Any,
    mask: Any,
    config: CSMConfig,
    *,
    batch_size: int | None = None,
    position: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """tokens (integers) and mask (bool), both [B, S>=1, K+1], B = batch_size when given, fed at
    `position` of the backbone's window; ids in range where the mask is set. Returns int64 tokens
    with the masked-out entries zeroed (they may hold anything, e.g. pad ids) and the bool mask."""
    K1 = config.audio_num_codebooks + 1
    tokens, mask = np.asarray(tokens), np.asarray(mask)
    rows = "B" if batch_size is None else batch_size
    if tokens.ndim != 3 or tokens.shape[2] != K1 or tokens.shape[1] < 1:
        raise ValueError(f"tokens must have shape ({rows}, S>=1, {K1}), got {tokens.shape}")
    if batch_size is not None and tokens.shape[0] != batch_size:
        raise ValueError(f"tokens have {tokens.shape[0]} rows (shape {tokens.shape}) but reset() was given batch_size {batch_size}")
    if not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"tokens must be integers, got dtype {tokens.dtype}")
    if mask.shape != tokens.shape:
        raise ValueError(f"mask must have the shape of tokens {tokens.shape}, got {mask.shape}")
    if mask.dtype != np.bool_:
        raise ValueError(f"mask must be boolean, got dtype {mask.dtype}")
    window = config.backbone.max_seq_len
    if position + tokens.shape[1] > window:
        raise ValueError(
            f"{tokens.shape[1]} positions at position {position} exceed the {window}-position context; "
            "shorten the prompt or reset()"
        )
    check_token_values(tokens, mask, config)
    return np.where(mask, tokens, 0).astype(np.int64, copy=False), mask


def check_token_values(tokens: np.ndarray, mask: np.ndarray, config: CSMConfig, where: str = "tokens") -> None:
    """Ids in range where the mask is set (they index the embedding tables): the last column holds
    text ids, the others audio codes. `where` names the array in the message."""
    for cols, limit, what in (
        (slice(None, -1), config.audio_vocab_size, "audio code"),
        (slice(-1, None), config.text_vocab_size, "text id"),
    ):
        used = tokens[..., cols][mask[..., cols]]
        if used.size and (used.min() < 0 or used.max() >= limit):
            bad = mask[..., cols] & ((tokens[..., cols] < 0) | (tokens[..., cols] >= limit))
            at = tuple(int(i) for i in np.argwhere(bad)[0])
            if cols.start == -1:
                at = at[:-1] + (tokens.shape[-1] - 1,)
            index = ", ".join(map(str, at))
            raise ValueError(f"{what} {int(tokens[at])} at {where}[{index}] is out of range [0, {limit})")


def check_probe_codes(codes: Any, config: CSMConfig, batch_size: int) -> np.ndarray:
    """A LogitsProbe's codes: integers [B, K], each in [0, audio_vocab_size) -> int64."""
    K, V = config.audio_num_codebooks, config.audio_vocab_size
    c = np.asarray(codes)
    if c.shape != (batch_size, K):
        raise ValueError(f"codes must have shape ({batch_size}, {K}), got {c.shape}")
    if not np.issubdtype(c.dtype, np.integer):
        raise ValueError(f"codes must be integers, got dtype {c.dtype}")
    if c.size and (c.min() < 0 or c.max() >= V):
        b, k = np.argwhere((c < 0) | (c >= V))[0]
        raise ValueError(f"code {int(c[b, k])} at codes[{b}, {k}] is out of range [0, {V})")
    return c.astype(np.int64, copy=False)


def check_slot_prompt(tokens: Any, mask: Any, config: CSMConfig) -> tuple[np.ndarray, np.ndarray]:
    """A SlotModel.admit prompt: integer tokens and bool mask [S, K+1], S from 1 to the window (the
    ids are checked when the rows are fed, by step)."""
    K1, window = config.audio_num_codebooks + 1, config.backbone.max_seq_len
    tokens, mask = np.asarray(tokens), np.asarray(mask)
    if tokens.ndim != 2 or tokens.shape[1] != K1 or tokens.shape[0] < 1:
        raise ValueError(f"admit: tokens must have shape (S>=1, {K1}), got {tokens.shape}")
    if not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"admit: tokens must be integers, got dtype {tokens.dtype}")
    if mask.shape != tokens.shape or mask.dtype != np.bool_:
        raise ValueError(f"admit: mask must be bool with the shape of tokens {tokens.shape}, got {mask.dtype} {mask.shape}")
    if tokens.shape[0] > window:
        raise ValueError(f"admit: a {tokens.shape[0]}-row prompt exceeds the {window}-position window")
    return tokens, mask
