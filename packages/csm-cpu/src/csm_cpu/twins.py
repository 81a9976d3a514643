"""Numpy twins of the kernels: the same math written plainly, for tests.

Block quantization uses gguf-py's numpy implementation (an independent twin of GGML's
reference quantizers); everything else is written here from the spec.
"""

from __future__ import annotations

import numpy as np

__all__ = ["quantize", "dequantize", "quantize_activations", "matmat"]


def _gguf_type(fmt: str):
    from gguf import GGMLQuantizationType

    from .formats import get

    return GGMLQuantizationType[get(fmt).gguf_type]


def _int8_activations(fmt: str) -> bool:
    from .formats import get

    return get(fmt).int8_activations


def quantize(w: np.ndarray, fmt: str) -> np.ndarray:
    """fp32 [R, C] -> stored rows uint8 [R, row_bytes]. Not for q4_k: gguf-py has no Q4_K
    quantizer (and any grid search is a valid one); its dequantizer is the q4_k twin."""
    w = np.ascontiguousarray(w, np.float32)
    if fmt == "f32":
        return w.view(np.uint8)
    if fmt == "bf16":
        import ml_dtypes

        return w.astype(ml_dtypes.bfloat16).view(np.uint8)
    from gguf import quants

    return quants.quantize(w, _gguf_type(fmt))


def dequantize(data: np.ndarray, fmt: str, cols: int) -> np.ndarray:
    if fmt == "f32":
        return data.view(np.float32).reshape(-1, cols)
    if fmt == "bf16":
        return (data.view(np.uint16).astype(np.uint32) << 16).view(np.float32).reshape(-1, cols)
    from gguf import quants

    return quants.dequantize(data, _gguf_type(fmt)).astype(np.float32).reshape(-1, cols)


def quantize_activations(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per 32 values: d = max|x|/127, q = round-half-away(x/d)."""
    x = np.asarray(x, np.float32)
    b = x.reshape(x.shape[0], -1, 32)
    d = (np.abs(b).max(-1) / np.float32(127)).astype(np.float32)
    inv = np.divide(np.float32(1), d, out=np.zeros_like(d), where=d != 0)
    v = b * inv[..., None]
    q = (np.sign(v) * np.floor(np.abs(v) + np.float32(0.5))).astype(np.int8)
    return q.reshape(x.shape), d


def matmat(data: np.ndarray, fmt: str, cols: int, x: np.ndarray) -> np.ndarray:
    """x [N, C] @ W.T with W stored in fmt; block formats see int8-quantized activations."""
    w = dequantize(data, fmt, cols).astype(np.float64)
    x = np.asarray(x, np.float32)
    if _int8_activations(fmt):
        q, d = quantize_activations(x)
        x = (q.reshape(x.shape[0], -1, 32) * d[..., None]).reshape(x.shape)
    return (x.astype(np.float64) @ w.T).astype(np.float32)
