"""Shared by the tests/core weight and config tests: HF rope parameters, a small CSM config,
random weights for a shape table."""

from __future__ import annotations

import numpy as np

from csm_core.config import CSMConfig

# spec/csm.md §4: the converter's rescaled-but-equivalent llama3 parameters.
BB_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 0.125,
           "high_freq_factor": 0.5, "original_max_position_embeddings": 1024}  # fmt: skip
DD_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1 / 512,
           "high_freq_factor": 1 / 128, "original_max_position_embeddings": 16}  # fmt: skip


def small_csm() -> CSMConfig:
    """The tiny-backbone / tiny-decoder flavors with a 300-token text vocabulary."""
    return CSMConfig(backbone_flavor="tiny-backbone", decoder_flavor="tiny-decoder", text_vocab_size=300)


def random_weights(shapes, seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
