"""Mimi's matrix products x [M, K] @ w [K, N] float32, with their threading policy as an explicit
argument: `paired=True` lets a large enough product split its rows (or columns) in two, one half
on the helper thread (threads.split_work). Callers pass it where BLAS runs on one thread
(few-frame streaming); the default runs everything on the calling thread."""

from __future__ import annotations

import numpy as np

from .threads import split_work

__all__ = ["matmul"]

_PAIR_MIN_MACS = 1 << 22  # products below this many multiply-adds are not worth a handoff
_PAIR_MIN_ROWS = 64  # gemms of fewer rows split their columns instead,
_PAIR_MIN_COLS = 128  # at least this many per thread
_FEW_ROWS = 4  # at most this many rows: a weight-streaming product beats BLAS gemm
_STREAM_MIN_BYTES = 1 << 20  # ... over a weight at least this big
_SLICE_BYTES = 2 << 20  # weight bytes per slice: cache-resident while every row uses it


def _stream_rows(x: np.ndarray, w: np.ndarray, y: np.ndarray) -> None:
    """y = x @ w for a few rows, reading w once in cache-sized row slices. A transposed-stored
    weight (weight_matrix) is read whole per row instead: its row slices are strided column
    blocks, measured 1.1-2x slower than a second pass from the L3 cache."""
    if x.shape[0] == 1 or not w.flags.c_contiguous:
        for r in range(x.shape[0]):
            np.matmul(x[r], w, out=y[r])
        return
    y[:] = 0.0
    rows = max(16, _SLICE_BYTES // (4 * w.shape[1]))
    for k in range(0, w.shape[0], rows):
        ws = w[k : k + rows]
        for r in range(x.shape[0]):
            y[r] += x[r, k : k + rows] @ ws


def _streamed(rows: int, w: np.ndarray) -> bool:
    """Whether a product of this many rows with w streams w (_stream_rows) instead of gemm."""
    return rows <= _FEW_ROWS and w.nbytes >= _STREAM_MIN_BYTES


def _product(x: np.ndarray, w: np.ndarray, y: np.ndarray) -> None:
    if _streamed(x.shape[0], w):
        _stream_rows(x, w, y)
    else:
        np.matmul(x, w, out=y)


def matmul(x: np.ndarray, w: np.ndarray, paired: bool = False) -> np.ndarray:
    """x [M, K] @ w [K, N] -> new [M, N]. For a few rows (streaming one frame) gemm would pack the
    whole weight for a couple of rows; instead stream it once in cache-sized row slices with vector
    products. When paired, large enough products are split in two, rows or columns, one half on
    the helper thread."""
    m = x.shape[0]
    y = np.empty((m, w.shape[1]), np.float32)
    if not paired or m < 2:
        _product(x, w, y)
    elif _streamed(m, w) or (m >= _PAIR_MIN_ROWS and m * w.size >= _PAIR_MIN_MACS):
        # rows split: vector products over a big weight, or gemms of >= 32 rows a thread
        h = (m + 1) // 2
        split_work(lambda: _product(x[:h], w, y[:h]), lambda: _product(x[h:], w, y[h:]))
    elif m > _FEW_ROWS and m * w.size >= _PAIR_MIN_MACS and w.shape[1] >= 2 * _PAIR_MIN_COLS:
        # columns split: two gemms of a few rows would each pack the whole weight
        h = w.shape[1] // 2
        split_work(lambda: _product(x, w[:, :h], y[:, :h]), lambda: _product(x, w[:, h:], y[:, h:]))
    else:
        _product(x, w, y)
    return y
