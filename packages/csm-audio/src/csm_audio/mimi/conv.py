"""Mimi's causal convolutions on time-major activations x [T, C] float32.

Time-major keeps every convolution a plain matrix product: a window of k consecutive rows is
contiguous memory, and a stride-s conv sees the input as blocks of s rows ([T/s, s·C], a free
reshape). Convolutions are causal (spec/mimi.md §2). Each conv/convT can run on a whole clip or
step through chunks with a small state, which is what makes streaming decode exact. `paired` is
passed on to the products (linalg.matmul).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .layout import weight_matrix
from .linalg import matmul

__all__ = ["Conv1d", "ConvTranspose1d", "conv_out_length"]

_IM2COL_ROWS = 64  # up to this many output rows (streaming), one im2col product beats nb shifted ones


def conv_out_length(length: int, kernel: int, stride: int) -> tuple[int, int]:
    """Frames out and right padding of a causal conv with moshi ≤0.2.4 / HF per-layer padding.

    Left pad is kernel − stride; the right pad makes the last window full.
    """
    pad = kernel - stride
    n_out = math.ceil((length - kernel + pad) / stride + 1) if length > 0 else 0
    extra = max((n_out - 1) * stride + kernel - pad - length, 0)
    return n_out, extra


class Conv1d:
    """Causal Conv1d. weight [Cout, Cin, k] (torch layout), optional bias [Cout].

    pad_mode 'constant' pads with zeros; 'replicate' repeats the edge samples (downsample conv).
    """

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None, stride: int = 1, pad_mode: str = "constant"):
        cout, cin, k = weight.shape
        self.cin, self.cout, self.k, self.s = cin, cout, k, stride
        self.pad = k - stride  # left context kept between chunks
        self.pad_mode = pad_mode
        n_p = -(-k // stride)  # kernel as n_p blocks of `stride` taps
        w = np.zeros((n_p * stride, cin, cout), np.float32)
        w[:k] = weight.transpose(2, 1, 0)  # [Cout, Cin, k] -> [k, Cin, Cout]
        self.n_blocks = n_p
        # [n_p·s·Cin, Cout], rows (block, tap within block, Cin); block p is rows p·s·Cin .. (p+1)·s·Cin
        self.set_matrix(weight_matrix(w.reshape(n_p * stride * cin, cout)))
        self.bias = None if bias is None else np.asarray(bias, np.float32)
        # Very narrow rows (first conv: Cin=1) are faster as one copied im2col GEMM; from 64 channels
        # on, the copy costs more than the extra accumulation of shifted GEMMs (measured).
        self.im2col = stride * cin < 16

    def set_matrix(self, w_flat: np.ndarray) -> None:
        """Use w_flat (equal to self.w_flat, e.g. a pack_weights copy) from now on."""
        rows = self.s * self.cin
        self.w_flat = w_flat
        self.w_blocks = [w_flat[p * rows : (p + 1) * rows] for p in range(self.n_blocks)]

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Whole clip: x [L, Cin] -> [ceil(L/s), Cout], padded left and right per layer."""
        n_out, extra = conv_out_length(x.shape[0], self.k, self.s)
        mode = "edge" if self.pad_mode == "replicate" else "constant"
        xp = np.pad(x, ((self.pad, extra + self.n_blocks * self.s - self.k), (0, 0)), mode=mode)
        if mode == "edge" and self.n_blocks * self.s != self.k:
            xp[self.pad + x.shape[0] + extra :] = 0.0  # taps past k only meet zero weights
        return self._windows(xp, n_out)

    def init_state(self) -> np.ndarray | None:
        """Streaming state: the last k − s inputs [k−s, Cin]: zeros before the first chunk, or None
        for replicate padding (filled with the first sample when it arrives)."""
        if self.pad_mode == "replicate" and self.pad:
            return None
        return np.zeros((self.pad, self.cin), np.float32)

    def step(self, x: np.ndarray, state: np.ndarray | None, paired: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Streaming: x [n·s, Cin] -> ([n, Cout], new state). Equals forward() on the whole stream."""
        if self.n_blocks * self.s != self.k:
            raise NotImplementedError("streaming needs a kernel that is a multiple of the stride")
        if x.shape[0] % self.s:
            raise ValueError(f"a streamed chunk must be a multiple of the stride {self.s}, got {x.shape[0]} steps")
        if state is None:
            if x.shape[0] == 0:
                return np.zeros((0, self.cout), np.float32), state
            state = np.repeat(x[:1], self.pad, axis=0)
        xp = np.concatenate([state, x]) if self.pad else x
        y = self._windows(xp, x.shape[0] // self.s, paired)
        return y, xp[xp.shape[0] - self.pad :].copy()

    def step_rows(self, x: np.ndarray, state: np.ndarray, paired: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """step() for n independent streams at once: x [n, m·s, Cin], state [n, k−s, Cin] ->
        ([n, m, Cout], new state). One product over all rows' windows; each row's output is the
        one step() gives it alone on a product of the same shape per row (see _windows)."""
        if self.n_blocks * self.s != self.k:
            raise NotImplementedError("streaming needs a kernel that is a multiple of the stride")
        if x.shape[1] % self.s:
            raise ValueError(f"a streamed chunk must be a multiple of the stride {self.s}, got {x.shape[1]} steps")
        xp = np.concatenate([state, x], axis=1) if self.pad else x
        y = self._windows_rows(xp, x.shape[1] // self.s, paired)
        return y, xp[:, xp.shape[1] - self.pad :].copy()

    def finish(self, x: np.ndarray, state: np.ndarray | None, total: int) -> np.ndarray:
        """The last outputs of a stream of `total` inputs, x being its final (any-length) part:
        right-padded per layer exactly as forward() pads the whole stream."""
        if state is None:  # replicate mode and nothing seen before: the whole stream is x
            return self.forward(x)
        n_out, extra = conv_out_length(total, self.k, self.s)
        done = (total - x.shape[0]) // self.s
        xp = np.concatenate([state, x])
        tail = extra + self.n_blocks * self.s - self.k
        if self.pad_mode == "replicate":
            xp = np.concatenate([xp, np.repeat(xp[-1:], tail, axis=0)])
        else:
            xp = np.concatenate([xp, np.zeros((tail, self.cin), np.float32)])
        return self._windows(xp, n_out - done)

    def _windows(self, xp: np.ndarray, n_out: int, paired: bool = False) -> np.ndarray:
        """xp [(n_out − 1 + n_blocks)·s, Cin] -> y [n_out, Cout]."""
        return self._windows_rows(xp[None], n_out, paired)[0]

    def _windows_rows(self, xp: np.ndarray, n_out: int, paired: bool = False) -> np.ndarray:
        """xp [n, (n_out − 1 + n_blocks)·s, Cin] (n streams) -> y [n, n_out, Cout], each product
        taking all n rows' windows at once."""
        s, cin, nb, n = self.s, self.cin, self.n_blocks, xp.shape[0]
        xp = np.ascontiguousarray(xp, dtype=np.float32)
        if n_out == 0 or n == 0:
            return np.zeros((n, n_out, self.cout), np.float32)
        if nb == 1 and s == 1:  # pointwise conv: the input is already the matrix
            y = matmul(xp[:, :n_out].reshape(n * n_out, cin), self.w_flat, paired)
        elif self.im2col or n_out <= _IM2COL_ROWS:
            # row t = xp[t·s : t·s + nb·s] flattened: overlapping rows, copied once (for a few rows the
            # copy is tiny and one product reads the weight once instead of nb partial products)
            cols = as_strided(xp, (n, n_out, nb * s * cin), (xp.strides[0], s * cin * 4, 4))
            y = matmul(np.ascontiguousarray(cols).reshape(n * n_out, nb * s * cin), self.w_flat, paired)
        else:
            blocks = xp.reshape(n, -1, s * cin)  # [n, n_out − 1 + nb, s·Cin]
            y = matmul(blocks[:, :n_out].reshape(n * n_out, s * cin), self.w_blocks[0], paired)
            for p in range(1, nb):
                y += matmul(blocks[:, p : p + n_out].reshape(n * n_out, s * cin), self.w_blocks[p], paired)
        if self.bias is not None:
            y += self.bias
        return y.reshape(n, n_out, self.cout)


class ConvTranspose1d:
    """Causal ConvTranspose1d with right trimming (keep T·s of the (T−1)·s + k outputs).

    weight [Cin, Cout/groups, k]; groups is 1 (dense) or Cin (depthwise, the upsample).
    The k − s samples that spill past the chunk are the streaming state, added into the next chunk.
    """

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None, stride: int, groups: int = 1):
        cin, cout_g, k = weight.shape
        self.s, self.k, self.cin = stride, k, cin
        self.depthwise = groups > 1
        if self.depthwise and (groups != cin or cout_g != 1):
            raise ValueError(f"only dense or depthwise transposed convs are supported, got groups={groups}")
        self.cout = cin if self.depthwise else cout_g
        n_p = -(-k // stride)
        self.n_blocks = n_p
        w = np.zeros((cin, self.cout if not self.depthwise else 1, n_p * stride), np.float32)
        w[..., :k] = weight
        if self.depthwise:
            self.w = np.ascontiguousarray(w[:, 0, :].T)  # [Cin, 1, k'] -> [k', C]
        else:
            # [Cin, Cout, k'] -> [Cin, k'·Cout]: columns (tap, Cout)
            self.w = weight_matrix(w.transpose(0, 2, 1).reshape(cin, n_p * stride * self.cout))
        self.bias = None if bias is None else np.asarray(bias, np.float32)

    def init_state(self) -> np.ndarray:
        """Partial outputs (bias excluded) spilling into the next chunk: [(n_blocks − 1)·s, Cout]."""
        return np.zeros(((self.n_blocks - 1) * self.s, self.cout), np.float32)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Whole clip: x [T, Cin] -> [T·s, Cout]."""
        return self.step(x, self.init_state())[0]

    def step(self, x: np.ndarray, state: np.ndarray, paired: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """x [T, Cin] -> ([T·s, Cout], new state)."""
        y, new_state = self.step_rows(x[None], state[None], paired)
        return y[0], new_state[0]

    def step_rows(self, x: np.ndarray, state: np.ndarray, paired: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """step() for r independent streams at once: x [r, T, Cin], state [r, (n_blocks − 1)·s, Cout]
        -> ([r, T·s, Cout], new state); one product over all rows."""
        s, nb, c = self.s, self.n_blocks, self.cout
        r, n = x.shape[:2]
        if self.depthwise:
            y = x[:, :, None, :] * self.w[None, None, :, :]  # [r, T, k', C]
        else:
            y = matmul(x.reshape(r * n, self.cin), self.w, paired)  # [r·T, k'·Cout]
        y = y.reshape(r, n, nb, s, c)
        # out block t = Σ_p y[t − p, p]; blocks past T (p ≥ 1 of the last rows) are the new state
        full = np.empty((r, n + nb - 1, s, c), np.float32)
        full[:, :n] = y[:, :, 0]
        full[:, n:] = 0.0
        for p in range(1, nb):
            full[:, p : p + n] += y[:, :, p]
        full[:, : nb - 1] += state.reshape(r, nb - 1, s, c)
        out = full[:, :n].reshape(r, n * s, c)
        new_state = full[:, n:].reshape(r, (nb - 1) * s, c).copy()
        if self.bias is not None:
            out += self.bias
        return out, new_state
