"""SilentCipher's three networks in numpy: the carrier encoder (enc_c), the carrier decoder that
shapes the mark (dec_c) and the message decoder (dec_m).

Every block is a gated convolution, conv(x) * sigmoid(gate(x)), followed by BatchNorm2d in
*training* mode: the official code never calls .eval(), so each call normalises with the batch
statistics of its own input (biased variance, eps 1e-5) and the running statistics in the
checkpoint are never used.

Layout: activations are [frames, bins, channels] (torch: [1, channels, bins, frames]). A 3x3
convolution runs as chunked im2col GEMMs over a zero-padded, flattened [(frames+2)*(bins+2), C]
buffer: the 9 taps are 9 row offsets of that buffer, so each tap is a contiguous slice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["GatedLayer", "run_stack", "fold_dec_c_input"]

_EPS = 1e-5
_CHUNK_BYTES = 64 << 20  # im2col block per GEMM: large blocks keep BLAS efficient, bounded memory


@dataclass(frozen=True)
class GatedLayer:
    """conv and gate fused: w [k*k*Cin, 2*Cout] im2col weights (conv columns then gate columns),
    b [2*Cout]; gamma, beta [Cout] the BatchNorm affine; k the kernel size (3, padding 1; or 1)."""

    w: np.ndarray
    b: np.ndarray
    gamma: np.ndarray
    beta: np.ndarray
    k: int

    @property
    def cin(self) -> int:
        return self.w.shape[0] // (self.k * self.k)

    @property
    def cout(self) -> int:
        return self.gamma.shape[0]

    @classmethod
    def from_torch(cls, conv_w, conv_b, gate_w, gate_b, gamma, beta) -> "GatedLayer":
        k = conv_w.shape[2]
        cout, cin = conv_w.shape[:2]
        # [Cout, Cin, kh (bins), kw (frames)] -> [kh, kw, Cin, Cout] -> [kh*kw*Cin, Cout]
        def im2col(w):
            return np.asarray(w, np.float32).transpose(2, 3, 1, 0).reshape(k * k * cin, cout)

        w = np.concatenate([im2col(conv_w), im2col(gate_w)], axis=1)
        b = np.concatenate([conv_b, gate_b]).astype(np.float32)
        return cls(np.ascontiguousarray(w), b, np.asarray(gamma, np.float32), np.asarray(beta, np.float32), int(k))


def _gate(y: np.ndarray, cout: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        return y[:, :cout] / (1.0 + np.exp(-y[:, cout:]))


def _padded(x: np.ndarray) -> np.ndarray:
    """[T, F, C] -> zero-padded flat [(T+2)*(F+2) + 2, C] (2 spare rows for the last taps)."""
    t, f, c = x.shape
    buf = np.zeros(((t + 2) * (f + 2) + 2, c), np.float32)
    buf[: (t + 2) * (f + 2)].reshape(t + 2, f + 2, c)[1 : t + 1, 1 : f + 1] = x
    return buf


def _interior(buf: np.ndarray, t: int, f: int) -> np.ndarray:
    return buf[: (t + 2) * (f + 2)].reshape(t + 2, f + 2, -1)[1 : t + 1, 1 : f + 1]


def _batch_norm_(x: np.ndarray, s1: np.ndarray, s2: np.ndarray, n: int, layer: GatedLayer) -> None:
    """Normalise x [.., C] in place with batch statistics from sums s1, s2 over n positions."""
    mean = s1 / n
    var = np.maximum(s2 / n - mean * mean, 0.0)
    scale = layer.gamma / np.sqrt(var + _EPS)
    x *= scale.astype(np.float32)
    x += (layer.beta - mean * scale).astype(np.float32)


def _conv3(src: np.ndarray, t: int, f: int, layer: GatedLayer) -> np.ndarray:
    """3x3 gated conv + BatchNorm from a padded flat buffer to a new padded flat buffer."""
    cout, w2 = layer.cout, f + 2
    n = t * w2  # output rows on the padded grid (2 junk columns per frame)
    taps = [j * w2 + i for i in range(3) for j in range(3)]  # kh (bins) outer, kw (frames) inner
    dst = np.zeros(((t + 2) * w2 + 2, cout), np.float32)
    s1, s2 = np.zeros(cout), np.zeros(cout)
    rows = max(1024, _CHUNK_BYTES // (layer.w.shape[0] * 4))
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        cols = np.concatenate([src[start + o : stop + o] for o in taps], axis=1)
        y = cols @ layer.w
        y += layer.b
        g = _gate(y, cout)
        dst[start + w2 + 1 : stop + w2 + 1] = g  # output (frame, bin) -> padded (frame+1, bin+1)
        g = g[(np.arange(start, stop) % w2) < f]
        s1 += g.sum(0, dtype=np.float64)
        s2 += np.einsum("pc,pc->c", g, g, dtype=np.float64)
    grid = dst[: (t + 2) * w2].reshape(t + 2, w2, cout)
    grid[:, 0] = 0.0  # the junk columns landed on the pad columns
    grid[:, f + 1] = 0.0
    _batch_norm_(grid[1 : t + 1, 1 : f + 1], s1, s2, t * f, layer)
    return dst


def _conv1(x: np.ndarray, layer: GatedLayer) -> np.ndarray:
    """1x1 gated conv + BatchNorm on [T, F, Cin]."""
    t, f, cin = x.shape
    g = _gate(x.reshape(t * f, cin) @ layer.w + layer.b, layer.cout)
    s1 = g.sum(0, dtype=np.float64)
    s2 = np.einsum("pc,pc->c", g, g, dtype=np.float64)
    out = g.reshape(t, f, layer.cout)
    _batch_norm_(out, s1, s2, t * f, layer)
    return out


def run_stack(x: np.ndarray, layers: list[GatedLayer]) -> np.ndarray:
    """Gated blocks in sequence on x [T, F, Cin] -> [T, F, Cout] float32."""
    t, f, _ = x.shape
    cur, padded = np.asarray(x, np.float32), False
    for layer in layers:
        if layer.k == 3:
            cur, padded = _conv3(cur if padded else _padded(cur), t, f, layer), True
        else:
            cur, padded = _conv1(np.ascontiguousarray(_interior(cur, t, f)) if padded else cur, layer), False
    return np.ascontiguousarray(_interior(cur, t, f)) if padded else cur


def fold_dec_c_input(layer: GatedLayer, groups: tuple[int, ...] = (32, 32, 32)) -> GatedLayer:
    """dec_c's first layer for input [enc (32 ch), carrier, message]: the carrier and message
    planes are repeated 32 times in the official input, so their 32 weight slices are summed."""
    k2 = layer.k * layer.k
    w = layer.w.reshape(k2, sum(groups), -1)
    a, b = groups[0], groups[0] + groups[1]
    folded = np.concatenate([w[:, :a], w[:, a:b].sum(1, keepdims=True), w[:, b:].sum(1, keepdims=True)], axis=1)
    return GatedLayer(np.ascontiguousarray(folded.reshape(k2 * (a + 2), -1)), layer.b, layer.gamma, layer.beta, layer.k)
