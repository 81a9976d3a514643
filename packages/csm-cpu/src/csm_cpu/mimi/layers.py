"""Mimi's layers on csm-cpu's kernels (spec/mimi.md §2-4): causal convs and transposed convs as
products over input windows, the depthwise upsample, the windowed-attention transformer and the
split RVQ. Activations are time-major [T, C] float32.

Every layer streams: step(x, state) takes the next inputs and returns its outputs and new state;
a whole clip is one stream from the initial state, so streaming equals whole-clip by construction.
A transposed conv with kernel nb·s is a conv over windows of nb input rows whose output row holds
s output steps: out[t] = [x[t-nb+1] .. x[t]] @ B, so its state is its last nb − 1 inputs (the same
sums as adding partial outputs into the next chunk, which the numpy codec does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from csm_core.config import MimiConfig

from .. import _mimi
from .._mimi import ACT_ELU, ACT_GELU, ACT_NONE, Mat

__all__ = ["Conv", "ConvTr", "Upsample", "ResBlock", "Transformer", "TransformerState", "SplitRVQ"]

_F32 = np.float32


def _gemm(mat: Mat, xp: np.ndarray, lda: int, rows: int, out: np.ndarray, threads: int, *, acc=False, act=ACT_NONE):
    _mimi.gemm(mat, xp.reshape(-1), lda, rows, out, acc, act, threads)


def elu(x: np.ndarray, threads: int) -> np.ndarray:
    y = np.empty_like(x)
    _mimi.activation(x.reshape(-1), y.reshape(-1), ACT_ELU, threads)
    return y


class Conv:
    """Causal Conv1d, weight [Cout, Cin, k] (k a multiple of the stride), optional bias, the
    activation `act` applied to its output. pad_mode 'replicate' (the downsample) repeats the edge
    samples instead of zeros."""

    def __init__(self, weight, bias, stride: int, fmt: str, threads: int, act: int = ACT_NONE, pad_mode="constant"):
        cout, cin, k = weight.shape
        if k % stride:
            raise NotImplementedError(f"a conv kernel ({k}) must be a multiple of its stride ({stride})")
        self.cin, self.cout, self.k, self.s = cin, cout, k, stride
        self.pad = k - stride
        self.replicate = pad_mode == "replicate"
        self.act, self.threads = act, threads
        # [Cout, Cin, k] -> [k·Cin, Cout]: a window's rows (tap, Cin) flattened in time-major order
        self.mat = Mat(np.asarray(weight, _F32).transpose(2, 1, 0).reshape(k * cin, cout), fmt, bias)

    def init_state(self) -> np.ndarray | None:
        """The last k − s inputs [k−s, Cin]: zeros, or None for replicate padding (the first sample)."""
        if self.replicate and self.pad:
            return None
        return np.zeros((self.pad, self.cin), _F32)

    def step(self, x: np.ndarray, state, final: bool = False):
        """x [n·s, Cin] -> ([n, Cout], new state). final: x ends the stream and may be any length;
        it is padded to a multiple of the stride (zeros, or its last row) as a whole clip is."""
        s = self.s
        if x.shape[0] % s:
            if not final:
                raise ValueError(f"a streamed chunk must be a multiple of the stride {s}, got {x.shape[0]} steps")
            short = s - x.shape[0] % s
            fill = np.repeat(x[-1:], short, 0) if self.replicate else np.zeros((short, self.cin), _F32)
            x = np.concatenate([x, fill])
        if state is None:
            if x.shape[0] == 0:
                return np.zeros((0, self.cout), _F32), None
            state = np.repeat(x[:1], self.pad, axis=0)
        y, states = self.step_rows(x[None], [state])
        return y[0], states[0]

    def step_rows(self, x: np.ndarray, states: list[np.ndarray]):
        """Independent streams side by side: x [R, n·s, Cin], one state each -> ([R, n, Cout], states).
        Their padded inputs lie end to end in one buffer and one product reads every window of it
        (the k/s − 1 windows that straddle two streams are computed and dropped): the weight is
        read once for all streams."""
        R, n_in, _ = x.shape
        s, pad = self.s, self.pad
        if n_in % s:
            raise ValueError(f"a streamed chunk must be a multiple of the stride {s}, got {n_in} steps")
        xp = np.empty((R, pad + n_in, self.cin), _F32)
        for r, st in enumerate(states):
            xp[r, :pad] = st
        xp[:, pad:] = x
        per = (pad + n_in) // s  # windows per stream, the first n_in / s valid
        y = np.empty((R * per, self.cout), _F32)
        _gemm(self.mat, xp, s * self.cin, R * per - pad // s, y, self.threads, act=self.act)
        return y.reshape(R, per, self.cout)[:, : n_in // s], [xp[r, n_in:].copy() for r in range(R)]


class ConvTr:
    """Causal ConvTranspose1d (keep T·s outputs), weight [Cin, Cout, k], bias [Cout]; `act` on the output."""

    def __init__(self, weight, bias, stride: int, fmt: str, threads: int, act: int = ACT_NONE):
        cin, cout, k = weight.shape
        s, nb = stride, -(-k // stride)
        self.cin, self.cout, self.s, self.nb = cin, cout, s, nb
        self.act, self.threads = act, threads
        wp = np.zeros((cin, cout, nb * s), _F32)
        wp[..., :k] = weight
        # window row b (input x[t − nb + 1 + b]) meets taps (nb−1−b)·s .. (nb−b)·s − 1:
        # [Cin, Cout, s] -> [Cin, s·Cout] (columns: step within the output row, then Cout)
        blocks = [
            wp[:, :, (nb - 1 - b) * s : (nb - b) * s].transpose(0, 2, 1).reshape(cin, s * cout) for b in range(nb)
        ]
        self.mat = Mat(np.concatenate(blocks), fmt, None if bias is None else np.tile(np.asarray(bias, _F32), s))

    def init_state(self) -> np.ndarray:
        return np.zeros((self.nb - 1, self.cin), _F32)

    def step_rows(self, x: np.ndarray, states: list[np.ndarray]):
        """x [R, n, Cin] (independent streams, see Conv.step_rows) -> ([R, n·s, Cout], states)."""
        R, n, _ = x.shape
        k = self.nb - 1
        xp = np.empty((R, k + n, self.cin), _F32)
        for r, st in enumerate(states):
            xp[r, :k] = st
        xp[:, k:] = x
        y = np.empty((R * (k + n), self.s * self.cout), _F32)
        _gemm(self.mat, xp, self.cin, R * (k + n) - k, y, self.threads, act=self.act)
        y = y.reshape(R, k + n, self.s * self.cout)[:, :n].reshape(R, n * self.s, self.cout)
        return y, [xp[r, n:].copy() for r in range(R)]


class Upsample:
    """The depthwise transposed conv (weight [C, 1, k], k = 2s, no bias): per channel, elementwise."""

    def __init__(self, weight, stride: int):
        c, _, k = weight.shape
        if k != 2 * stride:
            raise NotImplementedError(f"the upsample kernel ({k}) must be twice its stride ({stride})")
        w = np.asarray(weight, _F32)[:, 0, :]
        self.s, self.c = stride, c
        self.w_now = np.ascontiguousarray(w[:, :stride].T)  # [s, C]: taps from x[t]
        self.w_prev = np.ascontiguousarray(w[:, stride:].T)  # [s, C]: taps from x[t − 1]

    def init_state(self) -> np.ndarray:
        return np.zeros((1, self.c), _F32)

    def step_rows(self, x: np.ndarray, states: list[np.ndarray]):
        """x [R, n, C] -> ([R, n·s, C], states)."""
        xp = np.concatenate([np.stack(states), x], axis=1)
        y = xp[:, 1:, None, :] * self.w_now[None, None] + xp[:, :-1, None, :] * self.w_prev[None, None]  # [R, n, s, C]
        return y.reshape(x.shape[0], -1, self.c), [xp[r, -1:].copy() for r in range(x.shape[0])]


class ResBlock:
    """ELU(x + conv_k1(ELU(conv_k3(ELU(x))))): the block's output only ever feeds an ELU, so it is
    fused here (and into conv_k3's output)."""

    def __init__(self, w: Mapping[str, np.ndarray], name: str, fmt: str, threads: int):
        self.threads = threads
        conv = lambda i: Conv(  # noqa: E731
            w[f"{name}.block.{i}.conv.conv.weight"], w[f"{name}.block.{i}.conv.conv.bias"], 1, fmt, threads, ACT_ELU
        )
        self.conv1, self.conv2 = conv(1), conv(3)
        if self.conv2.pad:
            raise NotImplementedError("the residual block's second conv must be pointwise")

    def init_state(self):
        return self.conv1.init_state()

    def step(self, x: np.ndarray, state):
        y, states = self.step_rows(x[None], [state])
        return y[0], states[0]

    def step_rows(self, x: np.ndarray, states: list):
        """x [R, n, C] (consumed: the result is written into it) -> (ELU(block(x)), states)."""
        x = np.ascontiguousarray(x, _F32)
        h, states = self.conv1.step_rows(elu(x, self.threads), states)
        h = np.ascontiguousarray(h)
        _gemm(self.conv2.mat, h, self.conv2.cin, h.shape[0] * h.shape[1], x.reshape(-1, x.shape[2]), self.threads,
              acc=True, act=ACT_ELU)
        return x, states


@dataclass
class TransformerState:
    """Steps seen so far (the RoPE position), and per layer key/value rows [capacity, d] whose
    first `length` rows precede the next chunk (the last context − 1 of them are looked at)."""

    offset: int = 0
    length: int = 0
    keys: list[np.ndarray] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)


_CHUNK = 256  # rows per transformer pass: longer inputs go through in pieces (bounded buffers)


class _Layer:
    def __init__(self, w: Mapping[str, np.ndarray], p: str, fmt: str):
        f32 = lambda a: np.ascontiguousarray(np.asarray(a, _F32))  # noqa: E731
        self.w_in = Mat(f32(w[f"{p}.self_attn.in_proj_weight"]).T, fmt)  # [3d, d] -> [d, 3d]
        ls1, ls2 = w[f"{p}.layer_scale_1.scale"], w[f"{p}.layer_scale_2.scale"]
        self.w_out = Mat(f32(w[f"{p}.self_attn.out_proj.weight"]).T, fmt, scale=ls1)  # [d, d] -> [d_in, d_out]
        self.w1 = Mat(f32(w[f"{p}.linear1.weight"]).T, fmt)  # [ff, d] -> [d, ff]
        self.w2 = Mat(f32(w[f"{p}.linear2.weight"]).T, fmt, scale=ls2)  # [d, ff] -> [ff, d]
        self.norm1 = (f32(w[f"{p}.norm1.weight"]), f32(w[f"{p}.norm1.bias"]))
        self.norm2 = (f32(w[f"{p}.norm2.weight"]), f32(w[f"{p}.norm2.bias"]))


class Transformer:
    """8 pre-norm layers; query i sees keys j with 0 <= i − j < context (explicit window, so any
    chunking gives the whole clip's result); interleaved RoPE from the absolute step."""

    def __init__(self, config: MimiConfig, w: Mapping[str, np.ndarray], prefix: str, fmt: str, threads: int):
        self.d, self.heads, self.ff = config.dimension, config.num_heads, config.dim_feedforward
        self.context, self.eps, self.threads = config.context, config.norm_eps, threads
        self.layers = [_Layer(w, f"{prefix}.transformer.layers.{i}", fmt) for i in range(config.num_transformer_layers)]
        hd = self.d // self.heads
        # float32 tables, as moshi and the numpy codec compute them
        self.freqs = np.exp(np.arange(hd // 2, dtype=_F32) * _F32(-math.log(config.rope_max_period) * 2 / hd)).astype(_F32)
        self.scale = 1.0 / math.sqrt(hd)
        self.capacity = 2 * (self.context - 1) + _CHUNK

    def init_state(self) -> TransformerState:
        return TransformerState()

    def step(self, x: np.ndarray, state: TransformerState):
        """The next n steps x [n, d] -> ([n, d], the state, updated in place)."""
        return self.step_rows(x[None], [state])[0][0], state

    def step_rows(self, x: np.ndarray, states: list[TransformerState]):
        """Independent streams x [R, n, d], one state each (updated in place) -> ([R, n, d], states).
        The products take every stream's rows at once; attention reads each stream's own cache."""
        x = np.array(x, _F32)
        for a in range(0, x.shape[1], _CHUNK):
            part = np.ascontiguousarray(x[:, a : a + _CHUNK])
            self._pass(part, states)
            x[:, a : a + _CHUNK] = part
        return x, states

    def _pass(self, x: np.ndarray, states: list[TransformerState]) -> None:
        R, n, d = x.shape
        th, rows = self.threads, R * n
        flat = x.reshape(rows, d)
        for st in states:
            if not st.keys:
                st.keys = [np.empty((self.capacity, d), _F32) for _ in self.layers]
                st.values = [np.empty((self.capacity, d), _F32) for _ in self.layers]
            if st.length + n > self.capacity:  # keep the last context − 1 rows at the front
                keep = min(st.length, self.context - 1)
                for buf in st.keys + st.values:
                    buf[:keep] = buf[st.length - keep : st.length]
                st.length = keep
        pos = np.concatenate([np.arange(st.offset, st.offset + n, dtype=_F32) for st in states])
        angle = pos[:, None] * self.freqs[None, :]
        cos, sin = np.cos(angle), np.sin(angle)
        h = np.empty((rows, d), _F32)
        qkv = np.empty((rows, 3 * d), _F32)
        att = np.empty((rows, d), _F32)
        f = np.empty((rows, self.ff), _F32)
        for i, layer in enumerate(self.layers):
            _mimi.layer_norm(flat, *layer.norm1, self.eps, h)
            _gemm(layer.w_in, h, d, rows, qkv, th)
            _mimi.rope(qkv, 2 * d, cos, sin)
            for r, st in enumerate(states):
                m, kc, vc, q = st.length, st.keys[i], st.values[i], qkv[r * n : (r + 1) * n]
                kc[m : m + n] = q[:, d : 2 * d]
                vc[m : m + n] = q[:, 2 * d :]
                _mimi.attention(q, kc, vc, m, self.heads, self.context, self.scale, att[r * n : (r + 1) * n], th)
            _gemm(layer.w_out, att, d, rows, flat, th, acc=True)  # x += ls1 · (att @ W_out)
            _mimi.layer_norm(flat, *layer.norm2, self.eps, h)
            _gemm(layer.w1, h, d, rows, f, th, act=ACT_GELU)
            _gemm(layer.w2, f, self.ff, rows, flat, th, acc=True)  # x += ls2 · (GELU(h W1) W2)
        for st in states:
            st.length += n
            st.offset += n


class _RVQ:
    def __init__(self, w: Mapping[str, np.ndarray], prefix: str, n_q: int, fmt: str, threads: int):
        self.threads = threads
        proj = lambda name: np.asarray(w[f"{prefix}.{name}.weight"], _F32)[:, :, 0].T  # noqa: E731
        self.input_proj = Mat(proj("input_proj"), fmt)  # [cd, d, 1] -> [d, cd]
        self.output_proj = Mat(proj("output_proj"), fmt)  # [d, cd, 1] -> [cd, d]
        books = []
        for i in range(n_q):
            cb = f"{prefix}.vq.layers.{i}._codebook"
            usage = np.maximum(np.asarray(w[f"{cb}.cluster_usage"], _F32), _F32(1e-5))
            books.append(np.asarray(w[f"{cb}.embedding_sum"], _F32) / usage[:, None])
        self.books = np.ascontiguousarray(np.stack(books), _F32)  # [n_q, bins, cd], fp32 in every fmt
        # nearest codeword = argmax r·E − |E|²/2: products with E.T [cd, bins], bias −|E|²/2
        self.dist = [Mat(e.T, "f32", bias=-(_F32(0.5) * np.einsum("ij,ij->i", e, e))) for e in self.books]

    def encode(self, x: np.ndarray, n_q: int) -> np.ndarray:
        """x [T, d] -> codes [n_q, T]."""
        T = x.shape[0]
        r = np.empty((T, self.input_proj.N), _F32)
        _gemm(self.input_proj, x, x.shape[1], T, r, self.threads)
        scores = np.empty((T, self.books.shape[1]), _F32)
        codes = np.empty((n_q, T), np.int64)
        for i in range(n_q):
            _gemm(self.dist[i], r, r.shape[1], T, scores, self.threads)
            _mimi.rvq_pick(scores, r, self.books[i], codes[i])
        return codes

    def decode(self, codes: np.ndarray, out: np.ndarray, accumulate: bool) -> None:
        """out [T, d] (+)= (Σ codewords) @ output_proj."""
        acc = np.empty((codes.shape[1], self.books.shape[2]), _F32)
        _mimi.codebook_sum(self.books, codes, acc)
        _gemm(self.output_proj, acc, acc.shape[1], acc.shape[0], out, self.threads, acc=accumulate)


class SplitRVQ:
    """One semantic and one acoustic RVQ, both quantising the same latent (spec §4)."""

    def __init__(self, config: MimiConfig, w: Mapping[str, np.ndarray], fmt: str, threads: int):
        self.n_semantic, self.d = config.num_semantic, config.dimension
        self.first = _RVQ(w, "quantizer.rvq_first", config.num_semantic, fmt, threads)
        self.rest = _RVQ(w, "quantizer.rvq_rest", config.num_codebooks - config.num_semantic, fmt, threads)

    def encode(self, x: np.ndarray, num_codebooks: int) -> np.ndarray:
        codes = [self.first.encode(x, min(num_codebooks, self.n_semantic))]
        if num_codebooks > self.n_semantic:
            codes.append(self.rest.encode(x, num_codebooks - self.n_semantic))
        return np.concatenate(codes)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """codes [K, T] int64 -> latent [T, d]."""
        z = np.empty((codes.shape[1], self.d), _F32)
        self.first.decode(np.ascontiguousarray(codes[: self.n_semantic]), z, False)
        if codes.shape[0] > self.n_semantic:
            self.rest.decode(np.ascontiguousarray(codes[self.n_semantic :]), z, True)
        return z
