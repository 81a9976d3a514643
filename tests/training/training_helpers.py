"""Shared pieces of the training tests: a tiny random model and a batch of prompts with audio."""

from __future__ import annotations

import numpy as np

from csm_core.config import csm_tiny
from csm_core.testing.csm import make_prompt


def tiny_batch(config, seed: int, layouts=(((5, 6), (4, 5)), ((3, 4),))) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded prompts [B, S, K+1] (one per context layout, each ending in 4 text frames)."""
    rng = np.random.default_rng(seed)
    rows = [make_prompt(config, rng, context=ctx, target_text_len=4) for ctx in layouts]
    S = max(t.shape[1] for t, _ in rows)
    K1 = config.audio_num_codebooks + 1
    tokens = np.zeros((len(rows), S, K1), np.int64)
    mask = np.zeros((len(rows), S, K1), bool)
    for i, (t, m) in enumerate(rows):
        tokens[i, : t.shape[1]], mask[i, : m.shape[1]] = t[0], m[0]
    return tokens, mask


def tiny_config():
    return csm_tiny()
