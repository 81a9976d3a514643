"""Numpy twins of the Mimi kernels (csm_cpu._mimi), the same math written plainly in float64, for tests."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["bf16_round", "gemm", "elu", "gelu", "layer_norm", "rope", "attention", "codebook_sum", "rvq_pick"]

_erf = np.frompyfunc(math.erf, 1, 1)


def bf16_round(w: np.ndarray) -> np.ndarray:
    """float32 values rounded to bf16 (nearest even), back as float32."""
    u = np.ascontiguousarray(w, np.float32).view(np.uint32).astype(np.uint64)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    return u.astype(np.uint32).view(np.float32)


def elu(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact erf form."""
    x = np.asarray(x, np.float64)
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))


def gemm(w, fmt, a_flat, lda, rows, old=None, bias=None, scale=None, act=0) -> np.ndarray:
    """act((A @ W (+ bias)) (* scale) (+ old)); A row i = a_flat[i·lda : i·lda + K]; W [K, N] in fmt."""
    w = np.asarray(w, np.float32)
    if fmt == "bf16":
        w = bf16_round(w)
    K = w.shape[0]
    a = np.stack([a_flat[i * lda : i * lda + K] for i in range(rows)]).astype(np.float64)
    y = a @ w.astype(np.float64)
    if bias is not None:
        y += bias
    if scale is not None:
        y *= scale
    if old is not None:
        y += old
    return [y, elu(y), gelu(y)][act]


def layer_norm(x, w, b, eps) -> np.ndarray:
    x = np.asarray(x, np.float64)
    xc = x - x.mean(-1, keepdims=True)
    return xc / np.sqrt((xc**2).mean(-1, keepdims=True) + eps) * w + b


def rope(x, cols, cos, sin) -> np.ndarray:
    """Interleaved pairs (2m, 2m+1) of each head in x[:, :cols] rotated; cos/sin [rows, hd/2]."""
    x = np.array(x, np.float64)
    n, half = x.shape[0], cos.shape[1]
    v = x[:, :cols].reshape(n, -1, half, 2)
    a, b = v[..., 0].copy(), v[..., 1].copy()
    c, s = cos[:, None, :], sin[:, None, :]
    v[..., 0], v[..., 1] = a * c - b * s, b * c + a * s
    x[:, :cols] = v.reshape(n, cols)
    return x


def attention(q, keys, values, first, heads, context, scale) -> np.ndarray:
    """Query i (key index first + i) over keys j with 0 <= first + i − j < context, per head."""
    n, d = q.shape[0], keys.shape[1]
    hd = d // heads
    out = np.zeros((n, d))
    for i in range(n):
        lo, hi = max(0, first + i + 1 - context), first + i + 1
        for h in range(heads):
            sl = slice(h * hd, (h + 1) * hd)
            s = keys[lo:hi, sl].astype(np.float64) @ q[i, sl].astype(np.float64) * scale
            p = np.exp(s - s.max())
            out[i, sl] = (p / p.sum()) @ values[lo:hi, sl]
    return out


def codebook_sum(books, codes) -> np.ndarray:
    return sum(books[i][codes[i]].astype(np.float64) for i in range(codes.shape[0]))


def rvq_pick(scores, r, book) -> tuple[np.ndarray, np.ndarray]:
    """(codes, r − E[codes]): first argmax per row."""
    codes = np.argmax(scores, axis=1)
    return codes, r - book[codes]
