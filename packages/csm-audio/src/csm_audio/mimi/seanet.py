"""SEANet encoder and decoder (spec/mimi.md §2), built from canonical Kyutai weight names.

Encoder `encoder.model.i`: 0 conv; per ratio (reversed) ResBlock, ELU, strided conv; ELU, conv.
Decoder `decoder.model.i`: 0 conv; per ratio ELU, transposed conv, ResBlock; ELU, conv.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from csm_core.config import MimiConfig

from .ops import Conv1d, ConvTranspose1d, elu

__all__ = ["SEANetEncoder", "SEANetDecoder"]

# The two stages nearest the waveform have few channels but many time steps: their activations
# (64 x 240000 floats for 10 s) would go through DRAM at every elementwise pass, so they run in
# tiles of time instead, through the same streaming code (exact, see tests/audio/test_mimi_streaming).
_TILED_STAGES = 2
_ENCODER_TILE = 4800  # samples per encoder head tile (rounded down to a multiple of its strides)
_DECODER_TILE = 240  # decoder tail input steps per tile (4800 samples at full size)

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
        """Whole clip. The wide-time, narrow-channel head runs in tiles that stay in cache, as a
        stream that ends with the clip (so its per-layer padding is the whole clip's)."""
        head, tail = self.stages[:_TILED_STAGES], self.stages[_TILED_STAGES:]
        tile = _ENCODER_TILE - _ENCODER_TILE % math.prod(d.s for _, d in head)
        state = [self.first.init_state()] + [[r.init_state(), d.init_state()] for r, d in head]
        n_full = x.shape[0] // tile * tile
        parts = []
        for a in range(0, n_full, tile):
            y, state = self._run(x[a : a + tile], state, None, head)
            parts.append(y)
        if n_full < x.shape[0]:
            parts.append(self._run(x[n_full:], state, x.shape[0], head)[0])
        x = np.concatenate(parts)
        for res, down in tail:
            x = down.forward(elu(res.forward(x)))
        return self.last.forward(elu(x))

    # Streaming: step() takes multiples of the hop; finish() ends the stream like forward() would.
    def init_state(self) -> list[Any]:
        return [self.first.init_state()] + [[r.init_state(), d.init_state()] for r, d in self.stages] + [
            self.last.init_state()
        ]

    def step(self, x: np.ndarray, state: list[Any]) -> tuple[np.ndarray, list[Any]]:
        y, new = self._run(x, state[:-1], None, self.stages)
        y, s = self.last.step(elu(y), state[-1])
        return y, new + [s]

    def finish(self, x: np.ndarray, state: list[Any], total: int) -> np.ndarray:
        """The last latent steps of a stream of `total` samples whose final part is x [r, channels]."""
        return self.last.step(elu(self._run(x, state[:-1], total, self.stages)[0]), state[-1])[0]

    def _run(self, x: np.ndarray, state: list[Any], total: int | None, stages) -> tuple[np.ndarray, list[Any]]:
        """First conv, then `stages` (ResBlock, ELU, strided conv), as a stream; the strided convs
        end the stream (right padding) when `total`, the stream's length in samples, is given."""
        new: list[Any] = []
        x, s = self.first.step(x, state[0])  # stride 1: any length
        new.append(s)
        for (res, down), (rs, ds) in zip(stages, state[1:]):
            x, rs = res.step(x, rs)
            if total is None:
                x, ds = down.step(elu(x), ds)
            else:
                x = down.finish(elu(x), ds, total)
                total = -(-total // down.s)  # this layer's whole-stream output length
            new.append([rs, ds])
        return x, new


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
        """The next latent steps -> audio. The head (wide channels, few steps, big weights) takes the
        chunk at once; the tail (narrow channels, many samples) runs in tiles that stay in cache."""
        n_head = len(self.stages) - _TILED_STAGES
        new: list[Any] = []
        x, s = self.first.step(x, state[0])
        new.append(s)
        for i, (up, res) in enumerate(self.stages[:n_head]):
            x, s = up.step(elu(x), state[1 + 2 * i])
            new.append(s)
            x, s = res.step(x, state[2 + 2 * i])
            new.append(s)
        tail_state = state[1 + 2 * n_head :]
        parts = []
        for a in range(0, max(x.shape[0], 1), _DECODER_TILE):
            xt = x[a : a + _DECODER_TILE]
            ts = []
            for j, (up, res) in enumerate(self.stages[n_head:]):
                xt, s = up.step(elu(xt), tail_state[2 * j])
                ts.append(s)
                xt, s = res.step(xt, tail_state[2 * j + 1])
                ts.append(s)
            xt, s = self.last.step(elu(xt), tail_state[-1])
            tail_state = ts + [s]
            parts.append(xt)
        return np.concatenate(parts), new + tail_state
