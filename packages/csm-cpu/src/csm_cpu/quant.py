"""Weights as the kernels read them: one 2-D matrix in one format (fp32, bf16, GGML Q8_0/Q4_0/Q4_K).

Block formats use GGML's byte layout, so a tensor read from a GGUF memory map is used as is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _kernels, features, formats  # features selects the kernel path at import

__all__ = ["QTensor", "quantize", "matmat", "quantize_activations", "check_format"]

BLOCK = _kernels.BLOCK  # elements per activation block of the int8 paths (and per Q8_0/Q4_0 block)


def check_format(fmt: str) -> str:
    return formats.get(fmt).name


@dataclass(frozen=True)
class QTensor:
    """Matrix [rows, cols] stored row by row in format fmt; data is uint8 [rows, row_bytes]."""

    fmt: str
    rows: int
    cols: int
    data: np.ndarray
    interleaved: bool = False  # rows repacked in groups of 4 (see repack4); kernels only

    @property
    def code(self) -> int:
        return formats.get(self.fmt).code

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

    def repack4(self) -> "QTensor":
        """Row-interleaved copy for the AVX2/AVX-512 4-row kernels (Q8_0, Q4_0, and bf16 with a multiple
        of 8 columns; others unchanged)."""
        if self.interleaved or not formats.get(self.fmt).repacks(self.cols):
            return self
        out = np.empty_like(self.data)
        _kernels.repack4(self.data, self.code, out)
        return QTensor(self.fmt, self.rows, self.cols, out, True)

    def dequantize(self) -> np.ndarray:
        """fp32 [rows, cols] (storage layout, not interleaved)."""
        if self.interleaved:
            raise ValueError("dequantize() needs the GGML layout, not a repacked copy")
        out = np.empty((self.rows, self.cols), np.float32)
        _kernels.dequantize_rows(self.data, self.code, self.cols, out)
        return out

    @classmethod
    def from_bytes(cls, fmt: str, rows: int, cols: int, data: np.ndarray, name: str = "tensor") -> "QTensor":
        """Wrap stored rows (e.g. a GGUF memory map) after checking the size."""
        f = formats.get(fmt)
        f.check_row_length(cols, name)
        rb = f.row_bytes(cols)
        flat = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
        if flat.size != rows * rb:
            raise ValueError(f"{name}: {flat.size} bytes stored, {fmt} [{rows}, {cols}] needs {rows * rb}")
        return cls(fmt, rows, cols, flat.reshape(rows, rb))


def quantize(w: np.ndarray, fmt: str, *, name: str = "tensor", threads: int = 1) -> QTensor:
    """Store a 2-D float matrix in fmt, checking that every value is finite.

    Works in blocks of rows, so a memory-mapped or bf16 source is never expanded to fp32 whole;
    fp32 contiguous input of fmt f32 is used without a copy.
    """
    f = formats.get(fmt)
    w = np.asarray(w)
    if w.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D matrix, got shape {w.shape}")
    rows, cols = w.shape
    f.check_row_length(cols, name)
    zero_copy = fmt == "f32" and w.dtype == np.float32 and w.flags.c_contiguous
    out = w if zero_copy else np.empty((rows, f.row_bytes(cols)), np.uint8)
    step = max(1, (16 << 20) // max(1, cols * 4))  # about 16 MiB of fp32 per block
    for r0 in range(0, rows, step):
        block = np.ascontiguousarray(w[r0 : r0 + step], dtype=np.float32)
        if not np.isfinite(block).all():
            raise ValueError(f"{name}: holds NaN or infinite values (first bad row >= {r0})")
        if zero_copy:
            continue
        _kernels.quantize_rows(block, f.code, out[r0 : r0 + step], threads)
    if zero_copy:
        out = w.view(np.uint8).reshape(rows, cols * 4)
    return QTensor(fmt, rows, cols, out)


def quantize_activations(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x [N, C] fp32 -> (int8 [N, C], fp32 scales [N, C/32]) as the int8 paths use them."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    q = np.empty(x.shape, np.int8)
    d = np.empty((x.shape[0], x.shape[1] // BLOCK), np.float32)
    _kernels.quantize_activations(x, q, d)
    return q, d


def matmat(w: QTensor, x: np.ndarray, *, threads: int = 1, legacy: bool = False) -> np.ndarray:
    """x [N, cols] -> x @ W.T [N, rows] with the active kernel path (legacy: several vectors on
    the kernels from before the prefill rework; the same results)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != w.cols:
        raise ValueError(f"activations of shape {x.shape} do not fit a [{w.rows}, {w.cols}] matrix")
    if w.interleaved and not features.uses_repacked():
        raise ValueError("a repacked matrix runs only on the avx2 and avx512 paths")
    y = np.empty((x.shape[0], w.rows), np.float32)
    _kernels.matmat(w.data, w.code, w.cols, x, y, threads, 16, int(w.interleaved), int(legacy))
    return y
