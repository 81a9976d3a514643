"""`csm convert`: a CSM checkpoint (original, .pt, Hugging Face or the sesame/csm-1b snapshot) → a
backend's own converted file, written by the backend whose `file_layout` is the target (csm-cpu:
"gguf", quantized at conversion and memory-mapped at load; csm-mlx: "mlx", MLX safetensors), or
"safetensors": the original layout (model.safetensors + config.json, f32 or bf16), which every
backend loads. With an adapter (`csm finetune`'s LoRA output) the adapter is merged in first."""

from __future__ import annotations

import os
from pathlib import Path

from .backends import BackendError, backend_classes, backend_for_layout, check_quant

__all__ = ["convert_checkpoint", "targets"]


def targets() -> tuple[str, ...]:
    """The layouts `convert` writes: each installed backend's converted files, and safetensors."""
    layouts = {cls.file_layout for cls in backend_classes().values() if getattr(cls, "file_layout", None)}
    return tuple(sorted(layouts)) + ("safetensors",)


def convert_checkpoint(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    target: str,
    quant: str | None = None,
    adapter: str | os.PathLike | None = None,
    **options,
) -> Path:
    """Write `src` (with `adapter` merged in, if given) converted for `target` to `dst`; returns the
    written file.

    quant: one of the target backend's formats (default: its choice for conversion, e.g. q8_0 for
    gguf, bf16 for mlx; f32 for safetensors); options: backend-specific (mlx: group_size)."""
    owner = backend_for_layout(target)
    if owner is None and target != "safetensors":
        raise BackendError(f"unknown conversion target {target!r}; expected one of {', '.join(targets())}")
    if owner is not None:
        check_quant(quant, owner[0])
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such file or directory")
    config, weights = _checkpoint(src, Path(adapter) if adapter is not None else None)
    if owner is None:
        return _to_safetensors(config, weights, dst, quant or "f32")
    return Path(owner[1].convert(config, weights, dst, quant=quant, **options))


def _checkpoint(src: Path, adapter: Path | None):
    """(config, canonical weights) of `src`, with the adapter merged in (float32 arithmetic)."""
    from csm_core.weights import load_csm_checkpoint

    config, weights = load_csm_checkpoint(src)
    if adapter is None:
        return config, weights
    try:
        from csm_mlx.training.adapter_files import merge_adapter
    except ImportError as e:
        raise BackendError(f"merging an adapter needs csm-mlx (its adapter format): {e}") from None
    return config, merge_adapter(weights, adapter, config)


def _to_safetensors(config, weights, dst: Path, quant: str) -> Path:
    """dst (a directory): model.safetensors (original names) + config.json."""
    import json

    import numpy as np
    from csm_core.weights import save_safetensors

    if quant not in ("f32", "bf16"):
        raise BackendError(f"--to safetensors writes f32 or bf16 weights, not {quant!r} (quantize with --to gguf or mlx)")
    if quant == "bf16":
        import ml_dtypes

        weights = {k: np.asarray(v, np.float32).astype(ml_dtypes.bfloat16) for k, v in weights.items()}
    else:
        weights = {k: np.asarray(v, np.float32) for k, v in weights.items()}
    dst.mkdir(parents=True, exist_ok=True)
    save_safetensors(dst / "model.safetensors", weights)
    (dst / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    return dst / "model.safetensors"
