"""Adapter directories without MLX: read, check against a model's shapes, merge into canonical weights.

Kept numpy-only (no mlx import) so that ``csm convert --merge-adapter`` runs wherever csm-core does.
``adapter.safetensors`` holds ``<layer>.lora_a`` [r, in] and ``<layer>.lora_b`` [out, r] (float32) per
wrapped layer (canonical names, e.g. ``backbone.layers.0.attn.q_proj``) and any fully trained tensor
under its canonical name; ``adapter_config.json`` holds the LoRA options and the base model's shapes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import numpy as np
from csm_core.config import CSMConfig
from csm_core.weights.safetensors_io import read_safetensors

__all__ = ["AdapterError", "ADAPTER_FILE", "CONFIG_FILE", "FORMAT", "read_adapter_meta", "read_adapter_arrays",
           "shape_fingerprint", "merge_adapter"]

ADAPTER_FILE, CONFIG_FILE = "adapter.safetensors", "adapter_config.json"
FORMAT = "csm-lora/1"


class AdapterError(ValueError):
    """An adapter does not fit the model it is applied to, or its files are malformed."""


def shape_fingerprint(config: CSMConfig) -> dict[str, list[int]]:
    return {k: list(v) for k, v in config.weight_shapes().items()}


def read_adapter_meta(directory: str | Path, config: CSMConfig | None = None) -> dict:
    """adapter_config.json of ``directory``; with ``config``, checked to be made for a model of that shape."""
    directory = Path(directory)
    cfile, afile = directory / CONFIG_FILE, directory / ADAPTER_FILE
    if not cfile.is_file() or not afile.is_file():
        raise AdapterError(f"{directory}: not an adapter directory (expected {CONFIG_FILE} and {ADAPTER_FILE})")
    try:
        meta = json.loads(cfile.read_text())
        lora = meta["lora"]
        float(lora["alpha"]) / int(lora["rank"])
    except (ValueError, KeyError, TypeError, ZeroDivisionError) as e:
        raise AdapterError(f"{cfile}: malformed adapter config: {e!r}") from None
    if meta.get("format") != FORMAT:
        raise AdapterError(f"{cfile}: format {meta.get('format')!r}, expected {FORMAT!r}")
    if config is not None:
        want, have = shape_fingerprint(config), meta.get("base_shapes", {})
        diff = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
        if diff:
            k = diff[0]
            raise AdapterError(
                f"{directory}: adapter was made for another model shape: {k} is {have.get(k)} in the adapter's base, "
                f"{want.get(k)} in this model ({len(diff)} tensors differ)"
            )
    return meta


def read_adapter_arrays(directory: str | Path) -> dict[str, np.ndarray]:
    arrays, _ = read_safetensors(Path(directory) / ADAPTER_FILE, mmap=False)
    return {k: np.asarray(v, np.float32) for k, v in arrays.items()}


def merge_adapter(
    weights: Mapping[str, np.ndarray], directory: str | Path, config: CSMConfig | None = None
) -> dict[str, np.ndarray]:
    """Canonical weights with the adapter folded in: W + (alpha / r) · B A, in float32 and cast back
    to each tensor's dtype; fully trained tensors replace the base ones."""
    meta = read_adapter_meta(directory, config)
    scale = float(meta["lora"]["alpha"]) / int(meta["lora"]["rank"])
    arrays = read_adapter_arrays(directory)
    out = dict(weights)
    for key, a in arrays.items():
        if key.endswith(".lora_b"):
            continue
        if key.endswith(".lora_a"):
            layer = key[: -len(".lora_a")]
            name, b = f"{layer}.weight", arrays.get(f"{layer}.lora_b")
            if b is None:
                raise AdapterError(f"{directory}: {layer} has lora_a but no lora_b")
            delta = scale * (b @ a)  # [out, r] @ [r, in]
        else:
            name, delta = key, None
        if name not in out:
            raise AdapterError(f"{directory}: adapter holds {name}, which the model does not have")
        w = np.asarray(out[name])
        new = delta if delta is not None else arrays[key]
        if new.shape != w.shape:
            raise AdapterError(f"{directory}: {name}: adapter gives {new.shape}, the model's tensor is {w.shape}")
        out[name] = (w.astype(np.float32) + delta if delta is not None else new).astype(w.dtype)
    return out
