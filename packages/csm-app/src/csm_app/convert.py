"""`csm convert`: a CSM checkpoint (original, .pt, Hugging Face or the sesame/csm-1b snapshot) → a
backend's own converted file, written by the backend whose `file_layout` is the target (csm-cpu:
"gguf", quantized at conversion and memory-mapped at load; csm-mlx: "mlx", MLX safetensors)."""

from __future__ import annotations

import os
from pathlib import Path

from .backends import BackendError, backend_classes, backend_for_layout, check_quant

__all__ = ["convert_checkpoint", "targets"]


def targets() -> tuple[str, ...]:
    """The converted layouts the installed backends write."""
    return tuple(sorted({cls.file_layout for cls in backend_classes().values() if getattr(cls, "file_layout", None)}))


def convert_checkpoint(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    target: str,
    quant: str | None = None,
    **options,
) -> Path:
    """Write `src` converted for `target` to `dst`; returns the written file.

    quant: one of the target backend's formats (default: its choice for conversion, e.g. q8_0 for
    gguf, bf16 for mlx); options: backend-specific (mlx: group_size 32, 64 or 128)."""
    owner = backend_for_layout(target)
    if owner is None:
        raise BackendError(f"unknown conversion target {target!r}; the installed backends write: {', '.join(targets()) or 'none'}")
    name, cls = owner
    check_quant(quant, name)
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such file or directory")
    from csm_core.weights import load_csm_checkpoint

    config, weights = load_csm_checkpoint(src)
    return Path(cls.convert(config, weights, dst, quant=quant, **options))
