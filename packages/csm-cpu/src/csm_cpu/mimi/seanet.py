"""SEANet encoder and decoder (spec/mimi.md §2) from csm_cpu.mimi.layers, streaming.

Decoder `decoder.model.i`: 0 conv; per ratio ELU, transposed conv, ResBlock; ELU, conv.
Encoder `encoder.model.i`: 0 conv; per ratio (reversed) ResBlock, ELU, strided conv; ELU, conv.
Every ELU is fused into the output of the layer before it. The wide-channel head takes a chunk
in pieces of _HEAD_STEPS latent steps (its weights are read once per piece), the narrow-channel
tail in tiles that stay in cache.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from csm_core.config import MimiConfig

from .._mimi import ACT_ELU
from .layers import Conv, ConvTr, ResBlock

__all__ = ["SEANetDecoder", "SEANetEncoder"]

_TAIL_STAGES = 2
_HEAD_STEPS = 64  # decoder: latent steps per head piece
_TAIL_ROWS = 480  # decoder: tail input rows per tile (10 latent steps at full size)
_ENCODER_TILE = 4800  # encoder: samples per head tile (a multiple of the head's strides)


def _conv(w, name: str, stride: int, fmt: str, threads: int, act: int = 0) -> Conv:
    return Conv(w[f"{name}.conv.conv.weight"], w[f"{name}.conv.conv.bias"], stride, fmt, threads, act)


class SEANetDecoder:
    """latent [T, dimension] (25 Hz) -> audio [T·hop, channels], streaming."""

    def __init__(self, config: MimiConfig, w: Mapping[str, np.ndarray], fmt: str, threads: int):
        self.first = _conv(w, "decoder.model.0", 1, fmt, threads, ACT_ELU)
        self.stages: list[tuple[ConvTr, ResBlock]] = []
        idx = 1
        for r in config.ratios:
            name = f"decoder.model.{idx + 1}.convtr.convtr"
            up = ConvTr(w[f"{name}.weight"], w[f"{name}.bias"], r, fmt, threads)
            self.stages.append((up, ResBlock(w, f"decoder.model.{idx + 2}", fmt, threads)))
            idx += 3
        self.last = _conv(w, f"decoder.model.{idx + 1}", 1, fmt, threads)
        self.head, self.tail = self.stages[:-_TAIL_STAGES], self.stages[-_TAIL_STAGES:]

    def init_state(self) -> list[Any]:
        return [self.first.init_state()] + [[u.init_state(), r.init_state()] for u, r in self.stages] + [
            self.last.init_state()
        ]

    def step(self, x: np.ndarray, state: list[Any]) -> tuple[np.ndarray, list[Any]]:
        """The next latent steps x [n, d] -> (audio [n·hop, channels], new state)."""
        y, states = self.step_rows(x[None], [state])
        return y[0], states[0]

    def step_rows(self, x: np.ndarray, states: list[list[Any]]) -> tuple[np.ndarray, list[list[Any]]]:
        """Independent streams x [R, n, d], one state each -> (audio [R, n·hop, channels], states)."""
        states = [list(st) for st in states]
        parts = []
        for a in range(0, max(x.shape[1], 1), _HEAD_STEPS):
            y = self._layer(self.first, x[:, a : a + _HEAD_STEPS], states, 0)
            for i, (up, res) in enumerate(self.head):
                y = self._layer(up, y, states, (1 + i, 0))
                y = self._layer(res, y, states, (1 + i, 1))
            for b in range(0, max(y.shape[1], 1), _TAIL_ROWS):
                parts.append(self._tail(y[:, b : b + _TAIL_ROWS], states))
        return np.concatenate(parts, axis=1), states

    @staticmethod
    def _layer(layer, x, states, where):
        """layer.step_rows over every stream, its state at states[r][where] (an index or a pair)."""
        i, j = where if isinstance(where, tuple) else (where, None)
        get = (lambda st: st[i]) if j is None else (lambda st: st[i][j])  # noqa: E731
        y, new = layer.step_rows(x, [get(st) for st in states])
        for st, s in zip(states, new):
            if j is None:
                st[i] = s
            else:
                st[i] = list(st[i])
                st[i][j] = s
        return y

    def _tail(self, y: np.ndarray, states: list[list[Any]]) -> np.ndarray:
        first = 1 + len(self.head)
        for i, (up, res) in enumerate(self.tail):
            y = self._layer(up, y, states, (first + i, 0))
            y = self._layer(res, y, states, (first + i, 1))
        return self._layer(self.last, y, states, len(states[0]) - 1)


class SEANetEncoder:
    """audio [L, channels] -> latent [ceil(L/hop), dimension] at 25 Hz, as one stream."""

    def __init__(self, config: MimiConfig, w: Mapping[str, np.ndarray], fmt: str, threads: int):
        self.first = _conv(w, "encoder.model.0", 1, fmt, threads)
        self.stages: list[tuple[ResBlock, Conv]] = []
        idx = 1
        ratios = list(reversed(config.ratios))
        for i, r in enumerate(ratios):
            act = ACT_ELU if i == len(ratios) - 1 else 0  # the last one feeds the final ELU
            res = ResBlock(w, f"encoder.model.{idx}", fmt, threads)
            self.stages.append((res, _conv(w, f"encoder.model.{idx + 2}", r, fmt, threads, act)))
            idx += 3
        self.last = _conv(w, f"encoder.model.{idx + 1}", 1, fmt, threads)
        self.head, self.rest = self.stages[:_TAIL_STAGES], self.stages[_TAIL_STAGES:]
        self.head_hop = math.prod(d.s for _, d in self.head)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The whole clip x [L, channels]: the head in tiles, each strided conv's input padded at
        the end of the stream to a multiple of its stride (moshi ≤ 0.2.4 / HF per-layer padding)."""
        tile = _ENCODER_TILE - _ENCODER_TILE % self.head_hop
        s0 = self.first.init_state()
        hs = [[r.init_state(), d.init_state()] for r, d in self.head]
        parts = []
        for a in range(0, x.shape[0], tile):
            final = a + tile >= x.shape[0]
            y, s0 = self.first.step(x[a : a + tile], s0)
            for i, (res, down) in enumerate(self.head):
                y, rs = res.step(y, hs[i][0])
                y, ds = down.step(y, hs[i][1], final=final)
                hs[i] = [rs, ds]
            parts.append(y)
        y = np.concatenate(parts)
        for res, down in self.rest:
            y, _ = res.step(y, res.init_state())
            y, _ = down.step(y, down.init_state(), final=True)
        return self.last.step(y, self.last.init_state())[0]
