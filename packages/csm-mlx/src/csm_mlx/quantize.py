"""MLX affine quantization of the CSM transformers (mixed precision: embeddings and heads stay float).

Only the backbone/decoder Linear layers and the projection are quantized; they are what a frame
reads ~4.5 G times over. Embeddings are only gathered, and the heads pick codes, so they keep the
model dtype.
"""

from __future__ import annotations

import mlx.nn as nn

__all__ = ["QUANT_BITS", "GROUP_SIZES", "check_quant", "quantize_model", "is_quantized_path"]

QUANT_BITS = (4, 8)
GROUP_SIZES = (32, 64, 128)


def check_quant(bits: int, group_size: int) -> None:
    if isinstance(bits, bool) or bits not in QUANT_BITS:
        raise ValueError(f"unsupported quantization bits {bits!r}; MLX formats supported here: {list(QUANT_BITS)}")
    if isinstance(group_size, bool) or group_size not in GROUP_SIZES:
        raise ValueError(f"unsupported quantization group size {group_size!r}; expected one of {list(GROUP_SIZES)}")


def is_quantized_path(path: str) -> bool:
    """Which modules (by dotted path) get quantized."""
    return path.startswith(("backbone.layers.", "decoder.layers.")) or path == "projection"


def quantize_model(model: nn.Module, bits: int, group_size: int = 64) -> nn.Module:
    """Quantize in place (``nn.quantize``, affine mode) → the model, with ``model.quantization`` set."""
    check_quant(bits, group_size)
    for path, m in model.named_modules():
        if is_quantized_path(path) and isinstance(m, nn.Linear) and m.weight.shape[-1] % group_size:
            raise ValueError(
                f"{path}: input width {m.weight.shape[-1]} is not a multiple of group size {group_size}; pick a smaller group"
            )
    nn.quantize(
        model,
        group_size=group_size,
        bits=bits,
        mode="affine",
        class_predicate=lambda p, m: isinstance(m, nn.Linear) and is_quantized_path(p),
    )
    model.quantization = {"bits": bits, "group_size": group_size, "mode": "affine"}
    return model
