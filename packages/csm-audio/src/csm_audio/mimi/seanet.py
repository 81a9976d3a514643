"""SEANet encoder and decoder (spec/mimi.md §2), built from canonical Kyutai weight names.

Encoder `encoder.model.i`: 0 conv; per ratio (reversed) ResBlock, ELU, strided conv; ELU, conv.
Decoder `decoder.model.i`: 0 conv; per ratio ELU, transposed conv, ResBlock; ELU, conv.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from csm_core.config import MimiConfig

from .ops import Conv1d, ConvTranspose1d, elu

__all__ = ["SEANetEncoder", "SEANetDecoder"]

Weights = Mapping[str, np.ndarray]


def _conv(w: Weights, name: str, stride: int = 1) -> Conv1d:
    return Conv1d(w[f"{name}.conv.conv.weight"], w[f"{name}.conv.conv.bias"], stride)


class _ResBlock:
    """x + conv_k1(ELU(conv_k3(ELU(x)))), identity skip."""

    def __init__(self, w: Weights, name: str):
        self.conv1 = _conv(w, f"{name}.block.1")
        self.conv2 = _conv(w, f"{name}.block.3")

    def forward(self, x: np.ndarray) -> np.ndarray:
        return x + self.conv2.forward(elu(self.conv1.forward(elu(x))))

    def init_state(self) -> list[np.ndarray]:
        return [self.conv1.init_state(), self.conv2.init_state()]

    def step(self, x: np.ndarray, state: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        h, s1 = self.conv1.step(elu(x), state[0])
        h, s2 = self.conv2.step(elu(h), state[1])
        return x + h, [s1, s2]


class SEANetEncoder:
    """audio [L, channels] -> latent [ceil(L/hop), dimension] at 25 Hz (whole clip)."""

    def __init__(self, config: MimiConfig, w: Weights):
        self.first = _conv(w, "encoder.model.0")
        self.stages: list[tuple[_ResBlock, Conv1d]] = []
        idx = 1
        for r in reversed(config.ratios):
            self.stages.append((_ResBlock(w, f"encoder.model.{idx}"), _conv(w, f"encoder.model.{idx + 2}", r)))
            idx += 3
        self.last = _conv(w, f"encoder.model.{idx + 1}")

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = self.first.forward(x)
        for res, down in self.stages:
            x = down.forward(elu(res.forward(x)))
        return self.last.forward(elu(x))


class SEANetDecoder:
    """latent [T, dimension] at 25 Hz -> audio [T·hop, channels]; whole clip or streaming."""

    def __init__(self, config: MimiConfig, w: Weights):
        self.first = _conv(w, "decoder.model.0")
        self.stages: list[tuple[ConvTranspose1d, _ResBlock]] = []
        idx = 1
        for r in config.ratios:
            up = ConvTranspose1d(
                w[f"decoder.model.{idx + 1}.convtr.convtr.weight"], w[f"decoder.model.{idx + 1}.convtr.convtr.bias"], r
            )
            self.stages.append((up, _ResBlock(w, f"decoder.model.{idx + 2}")))
            idx += 3
        self.last = _conv(w, f"decoder.model.{idx + 1}")

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.step(x, self.init_state())[0]

    def init_state(self) -> list[Any]:
        state: list[Any] = [self.first.init_state()]
        for up, res in self.stages:
            state += [up.init_state(), res.init_state()]
        state.append(self.last.init_state())
        return state

    def step(self, x: np.ndarray, state: list[Any]) -> tuple[np.ndarray, list[Any]]:
        new: list[Any] = []
        x, s = self.first.step(x, state[0])
        new.append(s)
        for i, (up, res) in enumerate(self.stages):
            x, s = up.step(elu(x), state[1 + 2 * i])
            new.append(s)
            x, s = res.step(x, state[2 + 2 * i])
            new.append(s)
        x, s = self.last.step(elu(x), state[-1])
        new.append(s)
        return x, new
