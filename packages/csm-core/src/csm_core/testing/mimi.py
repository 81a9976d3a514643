"""Random Mimi weights of the exact architecture, in canonical (Kyutai) names (spec/mimi.md §9).

Codebooks are randomised (a zero `embedding_sum`, as Hugging Face's init gives, would make every
code 0), cluster usage and layer scales too, so a parity test exercises every term. Conv weights
follow torch's default fan-in scale so activations stay of order one through SEANet.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ..config import MimiConfig
from ..weights import mimi_weight_shapes

__all__ = ["random_mimi_weights", "mimi_test_audio", "load_mimi_oracle", "unexplained_code_flips"]


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


def load_mimi_oracle(name: str = "mimi_tiny") -> dict[str, Any]:
    """The committed Mimi oracle fixture (tools/make_mimi_reference.py) as a dict, plus `config`.

    Keys, per clip c in {short (24000 samples), exact (24960), long (252000, > 250 steps)}:
    audio_c f32 [L]; seanet_c, enc_transformer_c f32 [d, T25]; latent_c f32 [d, T];
    codes{K}_c int64 [K, T] for K in {1, 8, 32}; decoded{K}_c f32 [T·1920] (HF decode of those
    codes; the long clip only for K = 32); dec_transformer32_c f32 [d, 2T]. Also seed, config_json.
    """
    from .csm import fixtures_dir

    path = fixtures_dir() / f"{name}_oracle.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: oracle fixture not found; regenerate it with tools/make_mimi_reference.py")
    with np.load(path, allow_pickle=False) as z:
        out: dict[str, Any] = {k: z[k] for k in z.files}
    out["seed"] = int(out["seed"])
    out["config"] = MimiConfig.from_dict(json.loads(str(out["config_json"])))
    return out


def unexplained_code_flips(
    weights: dict[str, np.ndarray],
    config: MimiConfig,
    latent: np.ndarray,
    codes: np.ndarray,
    ref_codes: np.ndarray,
    rtol: float = 1e-5,
) -> list[tuple[int, int]]:
    """(codebook, frame) where `codes` differ from `ref_codes` other than by a near-tie.

    Replays the reference quantisation in float64 on the reference latent [d, T]: at the first
    flip of a frame within each RVQ, the two candidates' distances must agree within rtol·d
    (spec/mimi.md §9). Later levels of that frame follow a different residual and are not judged.
    """
    x = np.asarray(latent, np.float64).T  # [T, d]
    bad: list[tuple[int, int]] = []
    groups = (("rvq_first", 0, config.num_semantic), ("rvq_rest", config.num_semantic, config.num_codebooks))
    for name, lo, hi in groups:
        hi = min(hi, ref_codes.shape[0])
        if lo >= hi:
            continue
        proj = weights[f"quantizer.{name}.input_proj.weight"][:, :, 0].astype(np.float64)  # [cd, d]
        r = x @ proj.T  # [T, cd]
        judged = np.zeros(x.shape[0], bool)
        for k in range(lo, hi):
            cb = f"quantizer.{name}.vq.layers.{k - lo}._codebook"
            usage = np.maximum(weights[f"{cb}.cluster_usage"].astype(np.float64), 1e-5)
            emb = weights[f"{cb}.embedding_sum"].astype(np.float64) / usage[:, None]
            for t in np.nonzero((codes[k] != ref_codes[k]) & ~judged)[0]:
                d_ref = np.linalg.norm(r[t] - emb[ref_codes[k, t]])
                d_new = np.linalg.norm(r[t] - emb[codes[k, t]])
                if abs(d_ref - d_new) > rtol * d_ref:
                    bad.append((k, int(t)))
                judged[t] = True
            r -= emb[ref_codes[k]]
    return bad
