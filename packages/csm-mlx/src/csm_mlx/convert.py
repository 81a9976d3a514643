"""Checkpoint → MLX-ready safetensors (optionally quantized), torch-free, and loading it back.

``convert(src, dst, dtype=..., quant_bits=None, group_size=64)`` reads any CSM checkpoint that
``csm_core.weights.load_csm_checkpoint`` reads (original ``.pt``/``.safetensors``, an HF directory or
index), casts it, optionally quantizes it with MLX's affine format, and writes the model's own
parameter names (canonical names; quantized layers add ``.scales``/``.biases``). The config travels
in the file's metadata, so the one file loads on its own; a directory destination also gets a
``config.json`` (the original config fields).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import mlx.core as mx
from csm_core.config import CSMConfig, LlamaConfig
from csm_core.weights import load_csm_checkpoint
from mlx.utils import tree_flatten

from .model import CSMModel, WeightsError, resolve_dtype
from .quantize import check_quant, quantize_model

__all__ = ["convert", "load_model", "FORMAT"]

FORMAT = "csm-mlx/1"
_DTYPE_NAMES = {mx.float32: "float32", mx.bfloat16: "bfloat16", mx.float16: "float16"}


def _config_metadata(config: CSMConfig) -> str:
    flavors = {name: asdict(flavor) for name, flavor in config.custom_flavors.items()}
    return json.dumps({**config.to_dict(), "custom_flavors": flavors})


def _config_from_metadata(text: str, source: str) -> CSMConfig:
    data = json.loads(text)
    custom = {n: LlamaConfig(**f) for n, f in data.pop("custom_flavors", {}).items()}
    return CSMConfig(**data, custom_flavors=custom) if custom else CSMConfig.from_dict(data, source=source)


def convert(
    src: str | Path,
    dst: str | Path,
    dtype: str = "bfloat16",
    quant_bits: int | None = None,
    group_size: int = 64,
    *,
    config: CSMConfig | str | Path | None = None,
    checkpoint: tuple[CSMConfig, dict] | None = None,
) -> Path:
    """Convert ``src`` to ``dst`` (a ``.safetensors`` file, or a directory that gets ``model.safetensors``
    + ``config.json``). Returns the path of the written safetensors file. ``checkpoint`` (config,
    canonical weights) replaces reading ``src`` (e.g. weights with an adapter merged in)."""
    dt = resolve_dtype(dtype)
    if quant_bits is not None:
        check_quant(quant_bits, group_size)  # fail before reading gigabytes
    cfg, weights = checkpoint if checkpoint is not None else load_csm_checkpoint(src, config)
    model = CSMModel(cfg).load_canonical(weights, dt)
    del weights
    if quant_bits is not None:
        quantize_model(model, quant_bits, group_size)
    dst = Path(dst)
    if dst.suffix == ".safetensors":
        out, config_json = dst, None
    else:
        dst.mkdir(parents=True, exist_ok=True)
        out, config_json = dst / "model.safetensors", dst / "config.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT,
        "config": _config_metadata(cfg),
        "dtype": _DTYPE_NAMES[dt],
        "quantization": json.dumps(getattr(model, "quantization", None)),
    }
    arrays = dict(tree_flatten(model.parameters()))
    tmp = out.with_name(out.name + ".tmp.safetensors")
    mx.save_safetensors(str(tmp), arrays, metadata=meta)
    os.replace(tmp, out)
    if config_json is not None:
        config_json.write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    return out


def load_model(path: str | Path, *, dtype: str | None = None) -> CSMModel:
    """A file written by ``convert`` (or a directory holding one as ``model.safetensors``) → CSMModel.

    Any other checkpoint is read through csm_core.weights and loaded in ``dtype`` (default float32).
    """
    path = Path(path)
    file = path / "model.safetensors" if path.is_dir() else path
    meta = {}
    if file.suffix == ".safetensors" and file.is_file():
        arrays, meta = mx.load(str(file), return_metadata=True)
    if meta.get("format") != FORMAT:
        cfg, weights = load_csm_checkpoint(path)
        return CSMModel(cfg).load_canonical(weights, resolve_dtype(dtype or "float32"))
    cfg = _config_from_metadata(meta["config"], str(file))
    model = CSMModel(cfg)
    quant = json.loads(meta.get("quantization", "null"))
    if quant:
        quantize_model(model, quant["bits"], quant["group_size"])
    if dtype is not None:
        dt = resolve_dtype(dtype)
        arrays = {k: v.astype(dt) if v.dtype in _DTYPE_NAMES else v for k, v in arrays.items()}
    try:
        model.load_weights(list(arrays.items()), strict=True)
    except ValueError as e:
        raise WeightsError(f"{file}: converted weights do not match their config: {e}") from None
    mx.eval(model.parameters())
    return model
