"""`csm convert`: a CSM checkpoint (original, .pt, Hugging Face or the sesame/csm-1b snapshot) → a
backend's own format. gguf: csm_cpu.gguf_io (quantized at conversion, memory-mapped at load);
mlx: csm_mlx.convert (MLX safetensors, optionally quantized in affine groups); safetensors: the
original layout (model.safetensors + config.json, f32 or bf16), which every backend loads.
With an adapter (`csm finetune`'s LoRA output) the adapter is merged into the weights first."""

from __future__ import annotations

import os
from pathlib import Path

from .backends import MLX_QUANT, QUANTS, BackendError

__all__ = ["convert_checkpoint", "TARGETS"]

TARGETS = ("gguf", "mlx", "safetensors")


def convert_checkpoint(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    target: str,
    quant: str | None = None,
    group_size: int = 64,
    adapter: str | os.PathLike | None = None,
) -> Path:
    """Write `src` converted for `target` to `dst`; returns the written file.

    quant: "f32" | "bf16" | "q8_0" | "q4_0" | "q4_k" (default: q8_0 for gguf, bf16 for mlx).
    group_size: mlx quantization group (32, 64 or 128). adapter: a LoRA adapter directory to merge in."""
    if target not in TARGETS:
        raise BackendError(f"unknown conversion target {target!r}; expected one of {', '.join(TARGETS)}")
    if quant is not None and quant not in QUANTS:
        raise BackendError(f"unknown quant {quant!r}; expected one of {', '.join(QUANTS)}")
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such file or directory")
    checkpoint = _merged(src, Path(adapter)) if adapter is not None else None
    if target == "gguf":
        return _to_gguf(src, dst, quant or "q8_0", checkpoint)
    if target == "safetensors":
        return _to_safetensors(src, dst, quant or "f32", checkpoint)
    return _to_mlx(src, dst, quant or "bf16", group_size, checkpoint)


def _merged(src: Path, adapter: Path):
    """(config, canonical weights) of `src` with the adapter merged in (float32 arithmetic)."""
    try:
        from csm_mlx.training.adapter_files import merge_adapter
    except ImportError as e:
        raise BackendError(f"merging an adapter needs csm-mlx (its adapter format): {e}") from None
    from csm_core.weights import load_csm_checkpoint

    config, weights = load_csm_checkpoint(src)
    return config, merge_adapter(weights, adapter, config)


def _to_gguf(src: Path, dst: Path, quant: str, checkpoint=None) -> Path:
    try:
        from csm_cpu import gguf_io
    except ImportError as e:
        raise BackendError(f"GGUF conversion needs csm-cpu with its GGUF writer (csm_cpu.gguf_io): {e}") from None
    from csm_core.weights import load_csm_checkpoint

    config, weights = checkpoint or load_csm_checkpoint(src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    gguf_io.write_gguf(dst, config, weights, quant)
    return dst


def _to_safetensors(src: Path, dst: Path, quant: str, checkpoint=None) -> Path:
    """dst (a directory): model.safetensors (original names) + config.json."""
    import json

    import numpy as np
    from csm_core.weights import load_csm_checkpoint, save_safetensors

    if quant not in ("f32", "bf16"):
        raise BackendError(f"--to safetensors writes f32 or bf16 weights, not {quant!r} (quantize with --to gguf or mlx)")
    config, weights = checkpoint or load_csm_checkpoint(src)
    if quant == "bf16":
        import ml_dtypes

        weights = {k: np.asarray(v, np.float32).astype(ml_dtypes.bfloat16) for k, v in weights.items()}
    else:
        weights = {k: np.asarray(v, np.float32) for k, v in weights.items()}
    dst.mkdir(parents=True, exist_ok=True)
    save_safetensors(dst / "model.safetensors", weights)
    (dst / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    return dst / "model.safetensors"


def _to_mlx(src: Path, dst: Path, quant: str, group_size: int, checkpoint=None) -> Path:
    try:
        from csm_mlx.convert import convert
    except ImportError as e:
        raise BackendError(f"MLX conversion needs csm-mlx (pip install 'csm-app[mlx]'): {e}") from None
    dtype, bits = MLX_QUANT[quant]
    return Path(convert(src, dst, dtype=dtype, quant_bits=bits, group_size=group_size, checkpoint=checkpoint))
