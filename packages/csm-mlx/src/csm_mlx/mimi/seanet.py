"""SEANet encoder and decoder (spec/mimi.md §2) from canonical Kyutai names.

Encoder ``encoder.model.i``: 0 conv; per ratio (reversed) ResBlock, ELU, strided conv; ELU, conv.
Decoder ``decoder.model.i``: 0 conv; per ratio ELU, transposed conv, ResBlock; ELU, conv.
"""

from __future__ import annotations

from typing import Any, Mapping

import mlx.core as mx
import numpy as np
from csm_core.config import MimiConfig

from .conv import Conv1d, ConvTranspose1d, elu

__all__ = ["SEANetEncoder", "SEANetDecoder"]

Weights = Mapping[str, np.ndarray]


def _conv(w: Weights, name: str, stride: int = 1) -> Conv1d:
    return Conv1d(w[f"{name}.conv.conv.weight"], w[f"{name}.conv.conv.bias"], stride)


class _ResBlock:
    """x + conv_k1(ELU(conv_k3(ELU(x)))), identity skip."""

    def __init__(self, w: Weights, name: str):
        self.conv1 = _conv(w, f"{name}.block.1")
        self.conv2 = _conv(w, f"{name}.block.3")

    def forward(self, x: mx.array) -> mx.array:
        return x + self.conv2.forward(elu(self.conv1.forward(elu(x))))

    def init_state(self, batch: int = 1) -> list[mx.array]:
        return [self.conv1.init_state(batch), self.conv2.init_state(batch)]

    def step(self, x: mx.array, state: list[mx.array]) -> tuple[mx.array, list[mx.array]]:
        h, s1 = self.conv1.step(elu(x), state[0])
        h, s2 = self.conv2.step(elu(h), state[1])
        return x + h, [s1, s2]


class SEANetEncoder:
    """audio [1, L, 1] → [1, ceil(L/hop), dimension] at 25 Hz (whole clip)."""

    def __init__(self, config: MimiConfig, w: Weights):
        self.first = _conv(w, "encoder.model.0")
        self.stages: list[tuple[_ResBlock, Conv1d]] = []
        idx = 1
        for r in reversed(config.ratios):
            self.stages.append((_ResBlock(w, f"encoder.model.{idx}"), _conv(w, f"encoder.model.{idx + 2}", r)))
            idx += 3
        self.last = _conv(w, f"encoder.model.{idx + 1}")

    def forward(self, x: mx.array) -> mx.array:
        x = self.first.forward(x)
        for res, down in self.stages:
            x = down.forward(elu(res.forward(x)))
        return self.last.forward(elu(x))


class SEANetDecoder:
    """[B, T, dimension] at 25 Hz → audio [B, T·hop, 1]; streaming (a whole clip is one chunk)."""

    def __init__(self, config: MimiConfig, w: Weights):
        self.first = _conv(w, "decoder.model.0")
        self.stages: list[tuple[ConvTranspose1d, _ResBlock]] = []
        idx = 1
        for r in config.ratios:
            p = f"decoder.model.{idx + 1}.convtr.convtr"
            self.stages.append((ConvTranspose1d(w[f"{p}.weight"], w[f"{p}.bias"], r), _ResBlock(w, f"decoder.model.{idx + 2}")))
            idx += 3
        self.last = _conv(w, f"decoder.model.{idx + 1}")

    def init_state(self, batch: int = 1) -> list[Any]:
        state: list[Any] = [self.first.init_state(batch)]
        for up, res in self.stages:
            state += [up.init_state(batch), res.init_state(batch)]
        return state + [self.last.init_state(batch)]

    def step(self, x: mx.array, state: list[Any]) -> tuple[mx.array, list[Any]]:
        x, s = self.first.step(x, state[0])
        new: list[Any] = [s]
        for i, (up, res) in enumerate(self.stages):
            x, s = up.step(elu(x), state[1 + 2 * i])
            new.append(s)
            x, s = res.step(x, state[2 + 2 * i])
            new.append(s)
        x, s = self.last.step(elu(x), state[-1])
        return x, new + [s]
