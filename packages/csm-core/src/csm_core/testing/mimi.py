"""Random Mimi weights of the exact architecture, in canonical (Kyutai) names (spec/mimi.md §9).

Codebooks are randomised (a zero `embedding_sum`, as Hugging Face's init gives, would make every
code 0), cluster usage and layer scales too, so a parity test exercises every term. Conv weights
follow torch's default fan-in scale so activations stay of order one through SEANet.
"""

from __future__ import annotations

import numpy as np

from ..config import MimiConfig
from ..weights import mimi_weight_shapes

__all__ = ["random_mimi_weights", "mimi_test_audio"]


def random_mimi_weights(config: MimiConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """A canonical float32 Mimi weight dict, deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    shapes = mimi_weight_shapes(config)
    for name, shape in sorted(shapes.items()):  # sorted: the draw order never depends on the table's
        if name.endswith("cluster_usage"):
            continue  # drawn with its embedding_sum
        if name.endswith("embedding_sum"):
            usage_name = name.replace("embedding_sum", "cluster_usage")
            usage = rng.uniform(0.5, 2.0, shapes[usage_name])
            out[usage_name] = usage.astype(np.float32)
            w = rng.normal(0.0, 0.05, shape) * usage[:, None]
        elif name.endswith("_initialized"):
            w = np.ones(shape)
        elif name.endswith(".scale"):  # LayerScale
            w = rng.uniform(0.0, 0.2, shape)
        elif ".norm" in name:
            w = 1.0 + rng.uniform(-0.1, 0.1, shape) if name.endswith("weight") else rng.normal(0.0, 0.02, shape)
        elif name.endswith("bias"):
            w = rng.uniform(-0.1, 0.1, shape)
        elif name.startswith("upsample"):  # depthwise: fan-in is the kernel alone
            w = rng.normal(0.0, 1.0 / np.sqrt(shape[-1]), shape)
        else:
            fan_in = int(np.prod(shape[1:]))
            if "convtr" in name:  # [Cin, Cout, k]: each output sums Cin·k/stride inputs
                fan_in = shape[0] * 2
            w = rng.normal(0.0, 1.0 / np.sqrt(fan_in), shape)
        out[name] = np.asarray(w, dtype=np.float32)
    return {k: out[k] for k in shapes}


def mimi_test_audio(length: int, seed: int = 0, sample_rate: int = 24_000) -> np.ndarray:
    """Speech-like test input float32 [length] in [-1, 1]: a few gliding harmonics with a
    syllable-rate envelope, plus a little noise. Deterministic in (length, seed)."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / sample_rate
    f0 = rng.uniform(90, 220) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    voice = sum(rng.uniform(0.1, 0.4) / h * np.sin(h * phase + rng.uniform(0, 2 * np.pi)) for h in range(1, 6))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 5) * t) ** 2
    audio = voice * envelope + rng.normal(0.0, 0.02, length)
    return np.clip(audio, -1.0, 1.0).astype(np.float32)
