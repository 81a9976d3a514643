"""Numpy building blocks of Mimi, on time-major activations x [T, C] float32.

Time-major keeps every convolution a plain matrix product: a window of k consecutive rows is
contiguous memory, and a stride-s conv sees the input as blocks of s rows ([T/s, s·C], a free
reshape). Convolutions are causal (spec/mimi.md §2). Each conv/convT can run on a whole clip or
step through chunks with a small state, which is what makes streaming decode exact.

Threading is an explicit argument: `paired=True` lets a large enough product or elementwise pass
split its rows (or columns) in two, one half on the helper thread (threads.split_work). Callers
pass it where BLAS runs on one thread (few-frame streaming); the default runs everything here.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .threads import split_work

__all__ = [
    "elu", "gelu", "layer_norm", "matmul", "weight_matrix", "pack_weights", "Conv1d", "ConvTranspose1d",
    "conv_out_length",
]

# Abramowitz & Stegun 7.1.26: erfc(z) = t·(a1 + a2 t + ... + a5 t⁴)·exp(−z²), t = 1/(1 + p z),
# |error| <= 1.5e-7, below float32 resolution of GELU's output. Here z = |x|/√2, so p is divided
# by √2, and the coefficients are halved to give ½·erfc = Φ(−|x|) directly.
_GELU_P = np.float32(0.3275911 / math.sqrt(2.0))
_GELU_A = tuple(  # a5 .. a1, Horner order
    np.float32(a / 2) for a in (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592)
)


def _rows_parallel(fn, x: np.ndarray, out: np.ndarray, paired: bool) -> np.ndarray:
    """fn(x_chunk, out_chunk): when paired, large passes split in two row halves, one on the
    helper thread (numpy ufuncs release the GIL)."""
    if paired and x.size >= _PAIR_MIN_ELEMENTS and x.shape[0] >= 2:
        h = x.shape[0] // 2
        split_work(lambda: fn(x[:h], out[:h]), lambda: fn(x[h:], out[h:]))
    else:
        fn(x, out)
    return out


_PAIR_MIN_ELEMENTS = 1 << 15  # elementwise passes below this are not worth a handoff (~15 us)
_PAIR_MIN_MACS = 1 << 22  # nor products below this many multiply-adds
_PAIR_MIN_ROWS = 64  # gemms of fewer rows split their columns instead,
_PAIR_MIN_COLS = 128  # at least this many per thread


def _elu_into(x: np.ndarray, y: np.ndarray) -> None:
    np.minimum(x, np.float32(0.0), out=y)
    np.exp(y, out=y)
    y -= np.float32(1.0)
    np.maximum(y, x, out=y)


def elu(x: np.ndarray, paired: bool = False) -> np.ndarray:
    """ELU(alpha=1) = max(x, exp(min(x, 0)) − 1), since e^x − 1 >= x.

    exp − 1 instead of expm1: numpy's float32 exp is SIMD and ~4x faster; the absolute error
    (~6e-8) is far below the parity tolerance. Large inputs are split over threads.
    """
    return _rows_parallel(_elu_into, x, np.empty_like(x), paired)


_GELU_BLOCK = 1 << 15  # elements per pass block: three float32 buffers stay in L2


def _gelu_into(x: np.ndarray, out: np.ndarray) -> None:
    """GELU(x) = relu(x) − |x|·Φ(−|x|), with Φ(−|x|) = ½·erfc(|x|/√2) from A&S 7.1.26."""
    flat_x, flat_o = x.reshape(-1), out.reshape(-1)
    for i in range(0, flat_x.size, _GELU_BLOCK):
        xb, ob = flat_x[i : i + _GELU_BLOCK], flat_o[i : i + _GELU_BLOCK]
        a = np.abs(xb)
        t = a * _GELU_P
        t += np.float32(1.0)
        np.reciprocal(t, out=t)  # t = 1 / (1 + p·|x|/√2)
        h = t * _GELU_A[0]
        for c in _GELU_A[1:]:  # Horner; coefficients carry the ½ of ½·erfc
            h += c
            h *= t
        e = np.square(xb)
        e *= np.float32(-0.5)
        np.exp(e, out=e)  # exp(−x²/2)
        h *= e
        h *= a  # |x|·Φ(−|x|)
        np.maximum(xb, np.float32(0.0), out=ob)
        ob -= h


def gelu(x: np.ndarray, paired: bool = False) -> np.ndarray:
    """GELU in the exact erf form x·Φ(x) (not the tanh approximation), |error| <= 1e-7·|x|."""
    x = np.ascontiguousarray(x, np.float32)
    return _rows_parallel(_gelu_into, x, np.empty_like(x), paired)


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    """LayerNorm over the last axis; statistics in float32 like torch (few numpy calls: streaming
    runs it on 2 rows, where each call's overhead is the cost)."""
    n = np.float32(x.shape[-1])
    xc = x - np.add.reduce(x, axis=-1, keepdims=True) / n
    var = np.add.reduce(np.square(xc), axis=-1, keepdims=True) / n
    var += np.float32(eps)
    np.sqrt(var, out=var)
    xc /= var
    xc *= weight
    xc += bias
    return xc


_FEW_ROWS = 4  # at most this many rows: a weight-streaming product beats BLAS gemm
_STREAM_MIN_BYTES = 1 << 20  # ... over a weight at least this big
_SLICE_BYTES = 2 << 20  # weight bytes per slice: cache-resident while every row uses it


def weight_matrix(w: np.ndarray) -> np.ndarray:
    """w [K, N] as float32 in the memory order its vector products read fastest: tall matrices
    (K > N) stored transposed, i.e. the [K, N] view of a C-order [N, K] array (measured: one-row
    products over (2048, 512) 18 vs 13 GB/s, over (512, 2048) 18 vs 12 the other way round)."""
    w = np.asarray(w, np.float32)
    return np.ascontiguousarray(w.T).T if w.shape[0] > w.shape[1] else np.ascontiguousarray(w)


def pack_weights(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Copies of float32 matrices (each C- or F-contiguous, same order kept) in one buffer: numpy
    asks for transparent huge pages on large buffers, and small weights read per streamed frame
    then share them (fewer TLB misses: 2-row products over 32 transformer-shaped weights measured
    ~10% faster, a streamed frame ~2%)."""
    bases = [a if a.flags.c_contiguous else a.T for a in arrays]
    if any(not b.flags.c_contiguous for b in bases):
        raise ValueError("pack_weights takes C- or F-contiguous arrays")
    align = 16  # floats: every weight starts on a 64-byte line
    sizes = [-(-b.size // align) * align for b in bases]
    arena = np.empty(sum(sizes), np.float32)
    out, off = [], 0
    for a, b, n in zip(arrays, bases, sizes):
        view = arena[off : off + b.size].reshape(b.shape)
        view[...] = b
        out.append(view if a is b else view.T)
        off += n
    return out


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
