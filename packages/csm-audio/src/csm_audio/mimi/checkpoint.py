"""Mimi weights from any supported layout to canonical float32 (spec/mimi.md §6).

The layouts themselves (Kyutai, HF `kyutai/mimi` flat or nested, an HF CSM checkpoint's
`codec_model.*`) and the strict checks live in csm_core.weights; this adapter applies them to an
in-memory dict and widens bf16/fp16 to the float32 the numpy codec computes in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from csm_core.config import MimiConfig
from csm_core.weights import CheckpointError, canonical_mimi_weights, load_mimi_checkpoint, to_float32

__all__ = ["CheckpointError", "canonical_weights", "load_weights"]


def canonical_weights(
    weights: Mapping[str, np.ndarray], config: MimiConfig, source: str = "weights"
) -> dict[str, np.ndarray]:
    """Any supported Mimi layout -> canonical Kyutai names, float32, strictly validated."""
    canon = canonical_mimi_weights(weights, config, source)
    return {k: to_float32(np.asarray(v)) for k, v in canon.items()}


def load_weights(path: str | Path, config: MimiConfig) -> dict[str, np.ndarray]:
    """A checkpoint file or directory -> canonical float32 weights, strictly validated."""
    return load_mimi_checkpoint(path, config, dtype="float32")
