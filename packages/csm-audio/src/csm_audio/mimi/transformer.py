"""Mimi's 8-layer transformer (spec/mimi.md §3): pre-norm LayerNorm, causal attention over a
window of `context` steps, interleaved RoPE, exact-erf GELU MLP, LayerScale, no biases.

One code path serves whole clips and streaming: a call takes the next n steps and a state (the
absolute position and, per layer, the keys/values of the last context − 1 steps). Each query at
absolute step i sees keys j with 0 <= i − j < context through an explicit mask, so streaming in
chunks of any size matches the whole clip (moshi's 250-slot ring does not; spec §7).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from csm_core.config import MimiConfig

from .activations import gelu, layer_norm
from .layout import weight_matrix
from .linalg import matmul

__all__ = ["Transformer", "TransformerState"]

_QUERY_BLOCK = 256  # queries per attention block: bounds the score buffer on long clips


@dataclass
class TransformerState:
    """Streaming state: steps seen so far and, per layer, key/value buffers [H, capacity, head_dim]
    whose first `length` steps (at most context − 1 of them are ever looked at) precede the next chunk.

    step() updates the state in place (appending to the buffers) and returns it.
    """

    offset: int = 0
    length: int = 0
    keys: list[np.ndarray] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)


class _Layer:
    def __init__(self, w: Mapping[str, np.ndarray], p: str, config: MimiConfig):
        d = config.dimension
        self.heads = config.num_heads
        self.head_dim = d // config.num_heads
        self.eps = config.norm_eps
        f32 = lambda a: np.ascontiguousarray(np.asarray(a, np.float32))  # noqa: E731
        self.w_in = weight_matrix(w[f"{p}.self_attn.in_proj_weight"].T)  # [3d, d] -> [d, 3d]; rows q|k|v (head, dim)
        self.w_out = weight_matrix(w[f"{p}.self_attn.out_proj.weight"].T)  # [d, d] -> [d_in, d_out]
        self.w1 = weight_matrix(w[f"{p}.linear1.weight"].T)  # [ff, d] -> [d, ff]
        self.w2 = weight_matrix(w[f"{p}.linear2.weight"].T)  # [d, ff] -> [ff, d]
        self.norm1 = (f32(w[f"{p}.norm1.weight"]), f32(w[f"{p}.norm1.bias"]))
        self.norm2 = (f32(w[f"{p}.norm2.weight"]), f32(w[f"{p}.norm2.bias"]))
        self.ls1 = f32(w[f"{p}.layer_scale_1.scale"])
        self.ls2 = f32(w[f"{p}.layer_scale_2.scale"])


class Transformer:
    def __init__(self, config: MimiConfig, w: Mapping[str, np.ndarray], prefix: str):
        self.config = config
        self.context = config.context
        self.layers = [
            _Layer(w, f"{prefix}.transformer.layers.{i}", config) for i in range(config.num_transformer_layers)
        ]
        hd = config.dimension // config.num_heads
        # moshi's RoPE tables are float32 throughout: freqs, angles, cos/sin
        self.freqs = np.exp(
            np.arange(hd // 2, dtype=np.float32) * np.float32(-math.log(config.rope_max_period) * 2 / hd)
        ).astype(np.float32)
        self.scale = np.float32(1.0 / math.sqrt(hd))
        self._masks: dict[tuple[int, int, int], np.ndarray] = {}

    def init_state(self) -> TransformerState:
        return TransformerState()

    def _mask(self, first: int, rows: int, keys: int) -> np.ndarray:
        """[rows, keys] additive mask, −inf where query r (at key index first + r) must not see key j:
        j in its future or context or more steps back. Cached: streaming asks for the same few shapes."""
        key = (first, rows, keys)
        mask = self._masks.get(key)
        if mask is None:
            delta = np.arange(first, first + rows)[:, None] - np.arange(keys)[None, :]
            mask = np.where((delta < 0) | (delta >= self.context), np.float32(-np.inf), np.float32(0.0))
            if rows <= 8:  # few-row calls; past the first `context` steps they repeat one shape
                if len(self._masks) >= 64:
                    self._masks.clear()
                self._masks[key] = mask
        return mask

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Whole clip: x [T, d] -> [T, d]."""
        return self.step(x, self.init_state())[0]

    def step(self, x: np.ndarray, state: TransformerState, paired: bool = False) -> tuple[np.ndarray, TransformerState]:
        """The next n steps x [n, d] -> ([n, d], the state, updated in place). paired: products and
        elementwise passes may use the helper thread (linalg.matmul)."""
        return self.step_rows(x[None], [state], paired)[0], state

    def step_rows(self, x: np.ndarray, states: list[TransformerState], paired: bool = False) -> np.ndarray:
        """The next m steps of r independent streams at once: x [r, m, d] -> [r, m, d], states[i]
        (row i's, any history) updated in place. The weight products take all r·m rows at once;
        attention runs per row over its own keys and values."""
        r, n, d = x.shape
        rot = np.concatenate([self._rotation(st.offset, n) for st in states])  # [r·n, 1, hd/2]
        append = [self._make_room(st, n) for st in states]
        x = np.array(x.reshape(r * n, d), np.float32)
        for i, layer in enumerate(self.layers):
            h = layer_norm(x, *layer.norm1, layer.eps)
            a = self._attention(layer, h, rot, states, i, append, paired)
            a *= layer.ls1
            x += a
            h = layer_norm(x, *layer.norm2, layer.eps)
            a = matmul(gelu(matmul(h, layer.w1, paired), paired), layer.w2, paired)
            a *= layer.ls2
            x += a
        for st, app in zip(states, append):
            st.offset += n
            st.length = st.length + n if app else min(st.length + n, self.context - 1)
        return x.reshape(r, n, d)

    def _rotation(self, offset: int, n: int) -> np.ndarray:
        """RoPE factors e^{i·angle} [n, 1, hd/2] of steps offset .. offset + n − 1, float32 cos/sin like moshi."""
        pos = np.arange(offset, offset + n, dtype=np.float32)
        angle = pos[:, None] * self.freqs[None, :]  # [n, hd/2]
        rot = np.empty((n, 1, angle.shape[1]), np.complex64)
        rot.real, rot.imag = np.cos(angle)[:, None], np.sin(angle)[:, None]
        return rot

    def _make_room(self, state: TransformerState, n: int) -> bool:
        """Whether the n new keys/values fit behind the cached ones in the buffers, after moving the
        last context − 1 cached steps to the front if needed. If not (a chunk too large for the
        buffers, or the first chunk), attention runs on a concatenation and the buffers are refilled."""
        if not state.keys:
            return False
        cap, keep = state.keys[0].shape[1], min(state.length, self.context - 1)
        if keep + n > cap:
            return False
        if state.length + n > cap:  # amortised: once every cap − context + 1 steps
            for buf in state.keys + state.values:
                buf[:, :keep] = buf[:, state.length - keep : state.length]
            state.length = keep
        return True

    def _attention(self, layer: _Layer, h, rot, states: list[TransformerState], i: int, append: list[bool], paired):
        """h [r·n, d]: r rows of n steps, row j continuing states[j]."""
        rn, d = h.shape
        H, hd = layer.heads, layer.head_dim
        n = rn // len(states)
        qkv = matmul(h, layer.w_in, paired)  # [r·n, 3d]
        qk = _rope(qkv[:, : 2 * d], rot, 2 * H)  # [r·n, 2H, hd]: q heads, then k heads
        out = np.empty((rn, H, hd), np.float32)
        for j, (st, app) in enumerate(zip(states, append)):
            rows = slice(j * n, (j + 1) * n)
            q = qk[rows, :H].transpose(1, 0, 2)  # [H, n, hd]
            k_new = qk[rows, H:].transpose(1, 0, 2)
            v_new = qkv[rows, 2 * d :].reshape(n, H, hd).transpose(1, 0, 2)
            self._attend(q, k_new, v_new, st, i, app, out[rows])
        return matmul(out.reshape(rn, d), layer.w_out, paired)

    def _attend(self, q, k_new, v_new, state: TransformerState, i: int, append: bool, out: np.ndarray) -> None:
        """One row's attention: q, k_new, v_new [H, n, hd] of its n new steps -> out [n, H, hd];
        the new keys/values join the row's buffers."""
        H, n, hd = q.shape
        m = state.length if append else min(state.length, self.context - 1)  # cached steps before the chunk
        if append:
            kb, vb = state.keys[i], state.values[i]
            kb[:, m : m + n] = k_new
            vb[:, m : m + n] = v_new
            k, v = kb[:, : m + n], vb[:, : m + n]  # [H, m+n, hd]
        elif m:
            k = np.concatenate([state.keys[i][:, state.length - m : state.length], k_new], axis=1)
            v = np.concatenate([state.values[i][:, state.length - m : state.length], v_new], axis=1)
        else:
            k, v = np.ascontiguousarray(k_new), np.ascontiguousarray(v_new)
        q = q * self.scale
        for a in range(0, n, _QUERY_BLOCK):
            b = min(a + _QUERY_BLOCK, n)
            lo = max(0, a + m - self.context + 1)  # oldest key the first query of the block sees
            scores = q[:, a:b] @ k[:, lo : b + m].transpose(0, 2, 1)  # [H, b−a, keys]
            scores += self._mask(a + m - lo, b - a, b + m - lo)
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            out[a:b] = (scores @ v[:, lo : b + m]).transpose(1, 0, 2)
        if not append:  # refill: the last context − 1 steps at the front of (new) buffers
            keep = min(m + n, self.context - 1)
            cap = 2 * self.context
            if i == len(state.keys):  # the first chunk: this layer's buffers
                state.keys.append(np.empty((H, cap, hd), np.float32))
                state.values.append(np.empty((H, cap, hd), np.float32))
            state.keys[i][:, :keep] = k[:, k.shape[1] - keep :]
            state.values[i][:, :keep] = v[:, v.shape[1] - keep :]


def _rope(x: np.ndarray, rot: np.ndarray, heads: int) -> np.ndarray:
    """Interleaved RoPE on x [n, heads·hd] (last axis contiguous) -> [n, heads, hd]: pairs
    (2m, 2m+1) rotate by position·freq_m, as one complex product with rot [n, 1, hd/2]."""
    n = x.shape[0]
    return (x.view(np.complex64).reshape(n, heads, -1) * rot).view(np.float32)
