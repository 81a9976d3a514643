"""SEANet encoder and decoder (spec/mimi.md §2), built from canonical Kyutai weight names.

Encoder `encoder.model.i`: 0 conv; per ratio (reversed) ResBlock, ELU, strided conv; ELU, conv.
Decoder `decoder.model.i`: 0 conv; per ratio ELU, transposed conv, ResBlock; ELU, conv.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from csm_core.config import MimiConfig

from .activations import elu
from .conv import Conv1d, ConvTranspose1d
from .threads import one_blas_thread, share_work

__all__ = ["SEANetEncoder", "SEANetDecoder"]

# The two stages nearest the waveform have few channels but many time steps: their activations
# (64 x 240000 floats for 10 s) would go through DRAM at every elementwise pass, so they run in
# tiles of time instead, through the same streaming code (exact, see tests/audio/test_mimi_streaming).
_TILED_STAGES = 2
_ENCODER_TILE = 4800  # samples per encoder head tile (rounded down to a multiple of its strides)
_DECODER_TILE = 240  # decoder tail input steps per tile (4800 samples at full size)

Weights = Mapping[str, np.ndarray]


def _lead_in(layers, rows: int = 0) -> int:
    """Leading output rows of a causal stack that depend on the state its stream starts from, when
    `rows` leading input rows do (ELUs between layers are pointwise and change nothing).

    A stream started `halo` inputs early from zero state is exact from output row _lead_in(...)
    on: this is how a clip is split into pieces run on two threads (each later piece recomputes
    a few inputs of the one before)."""
    for layer in layers:
        if isinstance(layer, _ResBlock):
            rows = _lead_in([layer.conv1, layer.conv2], rows)  # the skip adds nothing: same rows
        elif isinstance(layer, ConvTranspose1d):  # out block t sums in rows t − nb + 1 .. t
            rows = (rows + layer.n_blocks - 1) * layer.s
        else:  # Conv1d: out row t reads in rows t·s − (k − s) .. t·s + s − 1
            rows = -(-(rows + layer.k - layer.s) // layer.s)
    return rows


def _conv(w: Weights, name: str, stride: int = 1) -> Conv1d:
    return Conv1d(w[f"{name}.conv.conv.weight"], w[f"{name}.conv.conv.bias"], stride)


def _pieces(n: int, halo: int, align: int = 1) -> list[int]:
    """Edges 0 = e0 < e1 < ... < n of the pieces a stream of n steps is split into for two threads
    (each piece but the first recomputes `halo` steps before its edge): 4 pieces on long streams,
    so a helper thread slowed by a busy machine can take fewer; 2 on shorter ones; none ([0, n])
    where the halo would cost too much. Edges are multiples of `align`."""
    count = 4 if n >= 64 * halo else 2 if n >= 8 * halo and n >= 2 * align else 1
    edges = [0] + [i * n // count // align * align for i in range(1, count)] + [n]
    return [e for i, e in enumerate(edges) if i == 0 or e > edges[i - 1]]


def _leaves(tree: Any) -> list[np.ndarray]:
    """The arrays of a nested list of arrays (a state), depth first."""
    return [a for t in tree for a in _leaves(t)] if isinstance(tree, list) else [tree]


def _unflatten(like: Any, leaves: list[np.ndarray]) -> Any:
    """leaves (as _leaves gives them) back in the nesting of `like`."""
    it = iter(leaves)

    def build(t: Any) -> Any:
        return [build(c) for c in t] if isinstance(t, list) else next(it)

    return build(like)


class _ResBlock:
    """x + conv_k1(ELU(conv_k3(ELU(x)))), identity skip."""

    def __init__(self, w: Weights, name: str):
        self.conv1 = _conv(w, f"{name}.block.1")
        self.conv2 = _conv(w, f"{name}.block.3")

    def forward(self, x: np.ndarray) -> np.ndarray:
        return x + self.conv2.forward(elu(self.conv1.forward(elu(x))))

    def init_state(self) -> list[np.ndarray]:
        return [self.conv1.init_state(), self.conv2.init_state()]

    def step(self, x: np.ndarray, state: list[np.ndarray], paired: bool = False) -> tuple[np.ndarray, list[np.ndarray]]:
        h, s1 = self.conv1.step(elu(x, paired), state[0], paired)
        h, s2 = self.conv2.step(elu(h, paired), state[1], paired)
        return x + h, [s1, s2]

    def step_rows(
        self, x: np.ndarray, state: list[np.ndarray], paired: bool = False
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """step() for r streams: x [r, n, C], states stacked [r, ...]."""
        h, s1 = self.conv1.step_rows(elu(x, paired), state[0], paired)
        h, s2 = self.conv2.step_rows(elu(h, paired), state[1], paired)
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

    def forward(self, x: np.ndarray, split: bool = False) -> np.ndarray:
        """Whole clip, as one stream that ends with the clip (so every layer pads like the whole
        clip's). With `split`, as 2 or 4 streams over pieces of the clip, shared with the helper
        thread (threads.share_work), each started a few frames early from zero state (see _lead_in)."""
        hop = math.prod(d.s for _, d in self.stages)
        layers = [self.first] + [layer for pair in self.stages for layer in pair] + [self.last]
        halo = _lead_in(layers) * hop  # samples each later piece starts early
        edges = _pieces(x.shape[0], max(halo, _ENCODER_TILE), hop) if split else [0, x.shape[0]]
        if len(edges) == 2:
            return self._stream(x, x.shape[0])

        def piece(i: int):
            a, b = edges[i], edges[i + 1]
            total = x.shape[0] if b == x.shape[0] else None
            return self._stream(x[:b], total) if a == 0 else self._stream(x[a - halo : b], total)[halo // hop :]

        with one_blas_thread():
            return np.concatenate(share_work([lambda i=i: piece(i) for i in range(len(edges) - 1)]))

    def _stream(self, x: np.ndarray, total: int | None) -> np.ndarray:
        """All layers on a stream from zero state whose start is a multiple of the hop; it ends at
        the end of x, as a stream of `total` samples, when total is given. The wide-time,
        narrow-channel head runs in tiles that stay in cache; the rest takes x at once."""
        head = self.stages[:_TILED_STAGES]
        x = self._head_stream(x, total)
        if total is not None:
            total = -(-total // math.prod(d.s for _, d in head))
        for res, down in self.stages[_TILED_STAGES:]:
            x, _ = res.step(x, res.init_state())
            if total is None:
                x, _ = down.step(elu(x), down.init_state())
            else:
                x = down.finish(elu(x), down.init_state(), total)
                total = -(-total // down.s)
        return self.last.step(elu(x), self.last.init_state())[0]

    def _head_stream(self, x: np.ndarray, total: int | None) -> np.ndarray:
        """First conv + head stages on a stream from zero state, in tiles; it ends at the end of x,
        as a stream of `total` samples, when total is given."""
        head = self.stages[:_TILED_STAGES]
        tile = _ENCODER_TILE - _ENCODER_TILE % math.prod(d.s for _, d in head)
        state = [self.first.init_state()] + [[r.init_state(), d.init_state()] for r, d in head]
        n_full = x.shape[0] // tile * tile if total is not None else x.shape[0]
        parts = []
        for a in range(0, n_full, tile):
            y, state = self._run(x[a : a + tile], state, None, head)
            parts.append(y)
        if n_full < x.shape[0]:
            parts.append(self._run(x[n_full:], state, total, head)[0])
        return np.concatenate(parts)

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
        # split streams (see _lead_in): latent steps a later piece starts early, for the whole stack
        # and for the tail alone (in tail input steps, each `tail_rate` samples)
        self.hop = math.prod(up.s for up, _ in self.stages)
        layers = [self.first] + [layer for pair in self.stages for layer in pair] + [self.last]
        self.halo = -(-_lead_in(layers) // self.hop)
        self.tail = self.stages[len(self.stages) - _TILED_STAGES :]  # run in tiles, maybe as 2 streams
        self.tail_rate = math.prod(up.s for up, _ in self.tail)
        self.tail_halo = -(-_lead_in([layer for pair in self.tail for layer in pair] + [self.last]) // self.tail_rate)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.step(x, self.init_state())[0]

    def init_state(self) -> list[Any]:
        state: list[Any] = [self.first.init_state()]
        for up, res in self.stages[: len(self.stages) - len(self.tail)]:
            state += [up.init_state(), res.init_state()]
        return state + self._tail_init()

    def step(
        self, x: np.ndarray, state: list[Any], split: bool = False, paired: bool = False
    ) -> tuple[np.ndarray, list[Any]]:
        """The next latent steps -> audio. The head (wide channels, few steps, big weights) takes the
        chunk at once; the tail (narrow channels, many samples) runs in tiles that stay in cache.
        With `split`, a long chunk runs as 2 or 4 streams over pieces of it, shared with the helper
        thread and each started a few steps early from zero state (see _lead_in); a short one (a
        frame) splits the tail only. `paired`: the products and passes run here may split in two
        over the helper thread (linalg.matmul); pieces shared with it never do."""
        edges = _pieces(x.shape[0], 2 * self.halo) if split else [0, x.shape[0]]
        if len(edges) == 2:
            return self._step(x, state, split, paired)
        run = lambda xs, st: self._step(xs, st, False, False)  # noqa: E731
        return self._shared(x, edges, self.halo, self.hop, run, state, self.init_state)

    def _shared(self, x, edges, halo, rate, run, state, zero_state) -> tuple[np.ndarray, list[Any]]:
        """run(x piece, state) -> (audio, state) over the pieces of x on two threads (share_work);
        every piece but the first starts halo steps early from zero_state(). The last piece's end
        state is the new state."""

        def piece(i: int):
            a, b = edges[i], edges[i + 1]
            if a == 0:
                return run(x[:b], state)
            y, s = run(x[a - halo : b], zero_state())
            return y[halo * rate :], s

        with one_blas_thread():
            out = share_work([lambda i=i: piece(i) for i in range(len(edges) - 1)])
        return np.concatenate([y for y, _ in out]), out[-1][1]

    def _step(self, x: np.ndarray, state: list[Any], split_tail: bool, paired: bool) -> tuple[np.ndarray, list[Any]]:
        n_head = len(self.stages) - len(self.tail)
        new: list[Any] = []
        x, s = self.first.step(x, state[0], paired)
        new.append(s)
        for i, (up, res) in enumerate(self.stages[:n_head]):
            x, s = up.step(elu(x, paired), state[1 + 2 * i], paired)
            new.append(s)
            x, s = res.step(x, state[2 + 2 * i], paired)
            new.append(s)
        tail_state = state[1 + 2 * n_head :]
        edges = _pieces(x.shape[0], self.tail_halo) if split_tail else [0, x.shape[0]]
        if len(edges) == 2:
            y, tail_state = self._tail(x, tail_state, paired)
            return y, new + tail_state
        y, tail_state = self._shared(x, edges, self.tail_halo, self.tail_rate, self._tail, tail_state, self._tail_init)
        return y, new + tail_state

    def step_rows(
        self, x: np.ndarray, state: list[Any], split: bool = False, paired: bool = False
    ) -> tuple[np.ndarray, list[Any]]:
        """step() for r independent streams at once: x [r, n, C] -> [r, n·hop, channels]; state as
        init_state() with every array stacked over the rows ([r, ...]). Every row's output is the
        one step(split=False) gives it alone: same tiles, same products per row.

        The head's products (the large weights) take all rows at once. The tail (small weights, long
        activations) runs on groups of rows whose tiles stay in cache like one row's; with `split`
        the groups are shared with the helper thread (threads.share_work). `paired` as in step()."""
        n_head = len(self.stages) - len(self.tail)
        new: list[Any] = []
        x, s = self.first.step_rows(x, state[0], paired)
        new.append(s)
        for i, (up, res) in enumerate(self.stages[:n_head]):
            x, s = up.step_rows(elu(x, paired), state[1 + 2 * i], paired)
            new.append(s)
            x, s = res.step_rows(x, state[2 + 2 * i], paired)
            new.append(s)
        tail_state = state[1 + 2 * n_head :]
        r = x.shape[0]
        g = max(1, _DECODER_TILE // max(1, min(x.shape[1], _DECODER_TILE)))  # rows per group
        groups = [slice(a, min(a + g, r)) for a in range(0, r, g)]

        def group(rows: slice, paired: bool):
            return self._tail_rows(x[rows], [s[rows] for s in _leaves(tail_state)], paired)

        if split and len(groups) > 1:
            with one_blas_thread():
                out = share_work([lambda rows=rows: group(rows, False) for rows in groups])
        else:
            out = [group(rows, paired) for rows in groups]
        y = np.concatenate([o[0] for o in out]) if len(out) > 1 else out[0][0]
        leaves = [np.concatenate(parts) if len(parts) > 1 else parts[0] for parts in zip(*(o[1] for o in out))]
        return y, new + _unflatten(tail_state, leaves)

    def _tail_rows(self, x: np.ndarray, leaves: list[np.ndarray], paired: bool) -> tuple[np.ndarray, list[np.ndarray]]:
        """_tail for rows x [r, n, C], the tail state's arrays flattened (_leaves), stacked over rows."""
        tail_state = _unflatten(self._tail_init(), leaves)
        parts = []
        for a in range(0, max(x.shape[1], 1), _DECODER_TILE):
            xt = np.ascontiguousarray(x[:, a : a + _DECODER_TILE])
            ts = []
            for j, (up, res) in enumerate(self.tail):
                xt, s = up.step_rows(elu(xt, paired), tail_state[2 * j], paired)
                ts.append(s)
                xt, s = res.step_rows(xt, tail_state[2 * j + 1], paired)
                ts.append(s)
            xt, s = self.last.step_rows(elu(xt, paired), tail_state[-1], paired)
            tail_state = ts + [s]
            parts.append(xt)
        return np.concatenate(parts, axis=1), _leaves(tail_state)

    def _tail_init(self) -> list[Any]:
        state: list[Any] = []
        for up, res in self.tail:
            state += [up.init_state(), res.init_state()]
        return state + [self.last.init_state()]

    def _tail(self, x: np.ndarray, tail_state: list[Any], paired: bool = False) -> tuple[np.ndarray, list[Any]]:
        """Tail stages + last conv over x [n, C] in tiles; tail_state as in init_state()'s end."""
        parts = []
        for a in range(0, max(x.shape[0], 1), _DECODER_TILE):
            xt = x[a : a + _DECODER_TILE]
            ts = []
            for j, (up, res) in enumerate(self.tail):
                xt, s = up.step(elu(xt, paired), tail_state[2 * j], paired)
                ts.append(s)
                xt, s = res.step(xt, tail_state[2 * j + 1], paired)
                ts.append(s)
            xt, s = self.last.step(elu(xt, paired), tail_state[-1], paired)
            tail_state = ts + [s]
            parts.append(xt)
        return np.concatenate(parts), tail_state
