"""`csm convert`: a CSM checkpoint (original, .pt, Hugging Face or the sesame/csm-1b snapshot) → a
backend's own format. gguf: csm_cpu.gguf_io (quantized at conversion, memory-mapped at load);
mlx: csm_mlx.convert (MLX safetensors, optionally quantized in affine groups)."""

from __future__ import annotations

import os
from pathlib import Path

from .backends import MLX_QUANT, QUANTS, BackendError

__all__ = ["convert_checkpoint", "TARGETS"]

TARGETS = ("gguf", "mlx")


def convert_checkpoint(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    target: str,
    quant: str | None = None,
    group_size: int = 64,
) -> Path:
    """Write `src` converted for `target` to `dst`; returns the written file.

    quant: "f32" | "bf16" | "q8_0" | "q4_0" | "q4_k" (default: q8_0 for gguf, bf16 for mlx).
    group_size: mlx quantization group (32, 64 or 128)."""
    if target not in TARGETS:
        raise BackendError(f"unknown conversion target {target!r}; expected one of {', '.join(TARGETS)}")
    if quant is not None and quant not in QUANTS:
        raise BackendError(f"unknown quant {quant!r}; expected one of {', '.join(QUANTS)}")
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such file or directory")
    if target == "gguf":
        return _to_gguf(src, dst, quant or "q8_0")
    return _to_mlx(src, dst, quant or "bf16", group_size)


def _to_gguf(src: Path, dst: Path, quant: str) -> Path:
    try:
        from csm_cpu import gguf_io
    except ImportError as e:
        raise BackendError(f"GGUF conversion needs csm-cpu with its GGUF writer (csm_cpu.gguf_io): {e}") from None
    from csm_core.weights import load_csm_checkpoint

    config, weights = load_csm_checkpoint(src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    gguf_io.write_gguf(dst, config, weights, quant)
    return dst


def _to_mlx(src: Path, dst: Path, quant: str, group_size: int) -> Path:
    try:
        from csm_mlx.convert import convert
    except ImportError as e:
        raise BackendError(f"MLX conversion needs csm-mlx (pip install 'csm-app[mlx]'): {e}") from None
    dtype, bits = MLX_QUANT[quant]
    return Path(convert(src, dst, dtype=dtype, quant_bits=bits, group_size=group_size))
