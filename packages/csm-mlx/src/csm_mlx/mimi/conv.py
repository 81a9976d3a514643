"""Causal convolutions on time-major activations x [B, T, C] (MLX's NLC layout), whole clip or streaming
(B = 1 for a clip; B rows of independent streams for the batched streaming decoder).

Whole clip (encoder) uses moshi ≤0.2.4 / HF per-layer padding: left k − s, right ``extra`` so the last
window is full (spec/mimi.md §2). Streaming keeps the last k − s inputs of a conv and the k − s
partial outputs of a transposed conv; decode always streams, from a zero state for a whole clip.
"""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np

__all__ = ["elu", "Conv1d", "ConvTranspose1d", "conv_out_length"]


def elu(x: mx.array) -> mx.array:
    """ELU(alpha=1)."""
    return mx.where(x > 0, x, mx.expm1(mx.minimum(x, 0.0)))


def conv_out_length(length: int, kernel: int, stride: int) -> tuple[int, int]:
    """(frames out, right padding) of a causal conv with per-layer padding."""
    pad = kernel - stride
    n_out = math.ceil((length - kernel + pad) / stride + 1) if length > 0 else 0
    return n_out, max((n_out - 1) * stride + kernel - pad - length, 0)


class Conv1d:
    """Causal Conv1d; weight [Cout, Cin, k] (torch layout) → stored [Cout, k, Cin] for ``mx.conv1d``."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None, stride: int = 1, replicate: bool = False):
        cout, cin, k = weight.shape
        self.k, self.s, self.cin = k, stride, cin
        self.pad = k - stride
        self.replicate = replicate  # the downsample conv pads by repeating the edge sample
        self.w = mx.array(np.ascontiguousarray(np.transpose(weight, (0, 2, 1)), dtype=np.float32))  # [Cout, k, Cin]
        self.b = None if bias is None else mx.array(np.asarray(bias, np.float32))

    def _conv(self, xp: mx.array) -> mx.array:
        y = mx.conv1d(xp, self.w, stride=self.s)
        return y if self.b is None else y + self.b

    def forward(self, x: mx.array) -> mx.array:
        """Whole clip: x [1, L, Cin] → [1, ceil(L/s), Cout]."""
        _, extra = conv_out_length(x.shape[1], self.k, self.s)
        if self.replicate:
            left = mx.repeat(x[:, :1], self.pad, axis=1)
            right = mx.repeat(x[:, -1:], extra, axis=1)
        else:
            left = mx.zeros((1, self.pad, self.cin), x.dtype)
            right = mx.zeros((1, extra, self.cin), x.dtype)
        return self._conv(mx.concatenate([left, x, right], axis=1))

    def init_state(self, batch: int = 1) -> mx.array:
        """The last k − s inputs [B, k−s, Cin], zeros before the first chunk."""
        return mx.zeros((batch, self.pad, self.cin), mx.float32)

    def step(self, x: mx.array, state: mx.array) -> tuple[mx.array, mx.array]:
        """Streaming: x [B, n·s, Cin] → ([B, n, Cout], new state); equals forward() over the whole stream."""
        xp = mx.concatenate([state, x], axis=1) if self.pad else x
        return self._conv(xp), xp[:, xp.shape[1] - self.pad :]


class ConvTranspose1d:
    """Causal ConvTranspose1d keeping T·s of the (T−1)·s + k outputs; the k − s that spill over are state.

    weight [Cin, Cout/groups, k]: dense (groups 1) or depthwise (groups = Cin, the upsample).
    Computed as x @ W [Cin, k'·Cout] then overlap-add of k'/s blocks (k padded to a multiple k' of s).
    """

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None, stride: int, depthwise: bool = False):
        cin, cout_g, k = weight.shape
        self.s, self.depthwise = stride, depthwise
        self.cout = cin if depthwise else cout_g
        self.nb = -(-k // stride)
        w = np.zeros((cin, cout_g, self.nb * stride), np.float32)
        w[..., :k] = weight
        if depthwise:
            self.w = mx.array(np.ascontiguousarray(w[:, 0, :].T))  # [Cin, 1, k'] -> [k', C]
        else:
            # [Cin, Cout, k'] -> [Cin, k'·Cout], columns ordered (tap, Cout)
            self.w = mx.array(np.ascontiguousarray(w.transpose(0, 2, 1).reshape(cin, -1)))
        self.b = None if bias is None else mx.array(np.asarray(bias, np.float32))

    def init_state(self, batch: int = 1) -> mx.array:
        """Partial outputs (bias excluded) for the next chunk [B, (nb−1)·s, Cout]."""
        return mx.zeros((batch, (self.nb - 1) * self.s, self.cout), mx.float32)

    def forward(self, x: mx.array) -> mx.array:
        """Whole clip: x [1, T, Cin] → [1, T·s, Cout]."""
        return self.step(x, self.init_state())[0]

    def step(self, x: mx.array, state: mx.array) -> tuple[mx.array, mx.array]:
        """x [B, n, Cin] → ([B, n·s, Cout], new state)."""
        B, n, s, c, nb = x.shape[0], x.shape[1], self.s, self.cout, self.nb
        if self.depthwise:
            y = x[:, :, None, :] * self.w[None, None]  # [B, n, k', C]
        else:
            y = x @ self.w  # [B, n, k'·C]
        y = y.reshape(B, n, nb, s, c)
        # output block t = Σ_p y[t − p, p]; blocks t ≥ n are the spill-over
        full = mx.concatenate([y[:, :, 0], mx.zeros((B, nb - 1, s, c), y.dtype)], axis=1)  # [B, n + nb − 1, s, C]
        for p in range(1, nb):
            full = full + mx.pad(y[:, :, p], [(0, 0), (p, nb - 1 - p), (0, 0), (0, 0)])
        full = full + mx.pad(state.reshape(B, nb - 1, s, c), [(0, 0), (0, n), (0, 0), (0, 0)])
        out = full[:, :n].reshape(B, n * s, c)
        if self.b is not None:
            out = out + self.b
        return out, full[:, n:].reshape(B, (nb - 1) * s, c)
