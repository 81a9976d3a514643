"""``MlxMimi``: the Mimi codec in MLX; implements csm_core.protocols.AudioCodec.

Encode: SEANet → transformer → stride-2 replicate-padded downsample → split RVQ (whole clip).
Decode: split RVQ → depthwise upsample → transformer → SEANet, always streamed from a state, so a
whole-clip decode is one chunk and ``streaming_decoder()`` gives the same samples chunk by chunk;
``batch_streaming_decoder(rows)`` advances many such streams together (each weight read once per
call for all rows). Each call builds one lazy graph and evaluates it once.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Mapping, Sequence

import mlx.core as mx
import numpy as np
from csm_core.codec_inputs import check_audio, check_codes, check_num_codebooks
from csm_core.config import MimiConfig
from csm_core.weights import canonical_mimi_weights as _canonical, load_mimi_checkpoint, to_float32

from .conv import Conv1d, ConvTranspose1d
from .quantizer import SplitRVQ
from .seanet import SEANetDecoder, SEANetEncoder
from .transformer import Transformer

__all__ = ["MlxMimi", "MlxMimiStreamingDecoder", "MlxMimiBatchStreamingDecoder"]


def canonical_mimi_weights(weights: Mapping[str, Any], config: MimiConfig, source: str = "weights") -> dict[str, np.ndarray]:
    """Any supported Mimi layout (Kyutai, HF flat/nested, HF CSM ``codec_model.*``) → canonical float32, validated."""
    canon = _canonical({k: np.asarray(v) for k, v in weights.items()}, config, source)
    return {k: to_float32(v) for k, v in canon.items()}


class MlxMimi:
    def __init__(self, config: MimiConfig, weights: Mapping[str, Any]):
        w = canonical_mimi_weights(weights, config)
        self.config = config
        self.sample_rate = config.sample_rate
        self.frame_size = config.frame_size
        self.num_codebooks = config.num_codebooks
        self.codebook_size = config.codebook_size
        s = config.downsample_stride
        self.encoder = SEANetEncoder(config, w)
        self.encoder_transformer = Transformer(config, w, "encoder_transformer")
        self.downsample = Conv1d(w["downsample.conv.conv.conv.weight"], None, s, replicate=True)
        self.quantizer = SplitRVQ(config, w)
        self.upsample = ConvTranspose1d(w["upsample.convtr.convtr.convtr.weight"], None, s, depthwise=True)
        self.decoder_transformer = Transformer(config, w, "decoder_transformer")
        self.decoder = SEANetDecoder(config, w)

    @classmethod
    def from_checkpoint(cls, path: str | Path, config: MimiConfig | None = None) -> "MlxMimi":
        """A Kyutai file, HF ``kyutai/mimi`` dir/file or HF CSM checkpoint (read by csm_core.weights)."""
        from csm_core.config import mimi

        config = config or mimi()
        return cls(config, load_mimi_checkpoint(path, config, dtype="float32"))

    # ---- encode ----
    def _latent(self, audio: np.ndarray) -> tuple[mx.array, mx.array, mx.array]:
        x = self.encoder.forward(mx.array(audio)[None, :, None])  # [1, T25, d]
        y = self.encoder_transformer.forward(x)
        return x, y, self.downsample.forward(y)  # latent [1, T, d]

    def encode(self, audio: np.ndarray, num_codebooks: int | None = None) -> np.ndarray:
        """1-D float audio at 24 kHz → int64 codes [K, ceil(L/1920)]."""
        k = self._check_num_codebooks(num_codebooks)
        codes = self.quantizer.encode(self._latent(self._check_audio(audio))[2][0], k)
        return np.array(codes).astype(np.int64)

    def encode_stages(self, audio: np.ndarray) -> dict[str, np.ndarray]:
        """Channel-first intermediates for parity tests: seanet [d, T25], transformer [d, T25], latent [d, T]."""
        x, y, z = self._latent(self._check_audio(audio))
        mx.eval(x, y, z)
        return {"seanet": np.array(x[0]).T, "transformer": np.array(y[0]).T, "latent": np.array(z[0]).T}

    # ---- decode ----
    def decode(self, codes: np.ndarray) -> np.ndarray:
        """codes [K, T] (1 <= K <= 32) → float32 audio [T·1920]."""
        return self.streaming_decoder().decode(codes)

    def decode_stages(self, codes: np.ndarray) -> dict[str, np.ndarray]:
        """Channel-first intermediates: latent [d, T], transformer [d, 2T], audio [L]."""
        z = self.quantizer.decode(mx.array(self._check_codes(codes)))
        y = self.decoder_transformer.forward(self.upsample.forward(z[None]))
        audio = self.decoder.step(y, self.decoder.init_state())[0]
        mx.eval(z, y, audio)
        return {"latent": np.array(z).T, "transformer": np.array(y[0]).T, "audio": np.array(audio[0, :, 0])}

    def streaming_decoder(self) -> "MlxMimiStreamingDecoder":
        return MlxMimiStreamingDecoder(self)

    def batch_streaming_decoder(self, rows: int) -> "MlxMimiBatchStreamingDecoder":
        """`rows` independent streaming decodes advanced together (csm_core BatchStreamingDecoder)."""
        return MlxMimiBatchStreamingDecoder(self, rows)

    # ---- input checks at the boundary: csm_core.codec_inputs, the same rules as every codec ----
    def _check_num_codebooks(self, k: int | None) -> int:
        return check_num_codebooks(k, self.num_codebooks)

    def _check_audio(self, audio: Any) -> np.ndarray:
        return check_audio(audio, self.sample_rate)

    def _check_codes(self, codes: Any) -> np.ndarray:
        return check_codes(codes, self.num_codebooks, self.codebook_size).astype(np.int32)


class MlxMimiStreamingDecoder:
    """decode(codes [K, n]) → exactly the n·1920 samples a whole-clip decode gives for those frames."""

    def __init__(self, model: MlxMimi):
        self.model = model
        self.reset()

    def reset(self) -> None:
        m = self.model
        self._up = m.upsample.init_state()
        self._tr = m.decoder_transformer.init_state()
        self._seanet = m.decoder.init_state()

    @property
    def frames(self) -> int:
        """Frames decoded since the last reset."""
        return self._tr.offset // self.model.config.downsample_stride

    def decode(self, codes: np.ndarray) -> np.ndarray:
        m = self.model
        codes = m._check_codes(codes)
        if codes.shape[1] == 0:
            return np.zeros(0, np.float32)
        z = m.quantizer.decode(mx.array(codes))[None]  # [1, n, d] at 12.5 Hz
        x, self._up = m.upsample.step(z, self._up)  # [1, 2n, d]
        x, self._tr = m.decoder_transformer.step(x, self._tr)
        y, self._seanet = m.decoder.step(x, self._seanet)  # [1, n·1920, 1]
        mx.eval(y, self._up, self._tr.keys, self._tr.values, self._seanet)
        return np.array(y[0, :, 0])


class MlxMimiBatchStreamingDecoder:
    """Streams in `rows` rows decoded together: ``decode(rows, codes [n, K, f])`` → float32
    [n, f·1920], each row exactly what its own MlxMimiStreamingDecoder gives (to float rounding).

    Every call runs all `rows` rows, one fixed shape whatever subset is named: the rows not named
    are fed zeros and keep their state (``mx.where`` on the new state), so a call costs the same for
    any subset and, on a GPU, one compiled graph per chunk length serves every call
    (``decode_every_step``: the scheduler then decodes each step's new frames at once). Gathering
    and scattering the named rows' state instead cost more than the whole batch on an H200.

    State per row (float32): the upsample and SEANet conv tails (a few thousand values per layer)
    and the decoder transformer's last context − 1 keys/values (8 layers · 2 · 249 · 512 values,
    about 8 MB at Mimi size).
    """

    decode_every_step = True

    def __init__(self, model: MlxMimi, rows: int, compile: bool | None = None):
        if isinstance(rows, bool) or not isinstance(rows, (int, np.integer)) or rows < 1:
            raise ValueError(f"rows must be an integer >= 1, got {rows!r}")
        self.model, self.rows = model, int(rows)
        self.compiled = (mx.default_device().type == mx.gpu) if compile is None else bool(compile)
        self._up = model.upsample.init_state(self.rows)
        self._seanet = model.decoder.init_state(self.rows)
        self._tr = model.decoder_transformer.init_rows_state(self.rows)
        self._fns: dict[tuple[int, bool], Any] = {}
        mx.eval(self._arrays())

    def _arrays(self) -> list[mx.array]:
        """Every state array, rows first, in one fixed order."""
        return [self._up, *_leaves(self._seanet), *self._tr.keys, *self._tr.values]

    def reset_row(self, row: int) -> None:
        row = self._check_rows([row])[0]
        for a in self._arrays():
            if a.size:
                a[row] = 0
        self._tr.offsets[row] = 0

    def frames(self, row: int) -> int:
        """Frames decoded in `row` since its last reset."""
        row = self._check_rows([row])[0]
        return int(self._tr.offsets[row]) // self.model.config.downsample_stride

    def decode(self, rows: Sequence[int], codes: np.ndarray) -> np.ndarray:
        m = self.model
        rows = self._check_rows(rows)
        c = np.asarray(codes)
        if c.ndim != 3 or c.shape[0] != len(rows):
            raise ValueError(f"codes must be an integer array [n={len(rows)} rows, num_codebooks, frames], got shape {c.shape}")
        c = np.stack([m._check_codes(c[i]) for i in range(len(rows))])  # [n, K, f] int32
        f = c.shape[2]
        if f == 0:
            return np.zeros((len(rows), 0), np.float32)
        every = len(rows) == self.rows
        full = np.zeros((self.rows, *c.shape[1:]), np.int32)
        full[rows] = c
        active = np.zeros(self.rows, bool)
        active[rows] = True
        offsets = np.where(active, self._tr.offsets, 0)  # idle rows: any valid offset will do
        mask, rope = m.decoder_transformer.rows_inputs(offsets, 2 * f)
        fn = self._fns.get((f, every))
        if fn is None:
            fn = partial(self._advance, every)
            fn = self._fns[(f, every)] = mx.compile(fn) if self.compiled else fn
        y, *state = fn(mx.array(full.transpose(1, 0, 2)), mx.array(active), mask, rope, *self._arrays())
        self._up, self._seanet, self._tr.keys, self._tr.values = self._split(state)
        self._tr.offsets[rows] += 2 * f
        mx.eval(y, state)
        return np.array(y[:, :, 0])[rows]

    def _advance(self, every: bool, codes: mx.array, active: mx.array, mask: mx.array, rope: mx.array, *state: mx.array):
        """All rows one chunk further: codes int32 [K, R, f] → (audio [R, f·1920, 1], *state);
        unless `every`, the rows not `active` keep their state. Pure in its arrays (compiled on a GPU)."""
        m = self.model
        up, seanet, keys, values = self._split(state)
        z = m.quantizer.decode(codes)  # [R, f, d] at 12.5 Hz
        x, up = m.upsample.step(z, up)  # [R, 2f, d]
        x, keys, values = m.decoder_transformer.step_rows_arrays(x, mask, rope, keys, values)
        y, seanet = m.decoder.step(x, seanet)  # [R, f·1920, 1]
        new = [up, *_leaves(seanet), *keys, *values]
        if every:
            return (y, *new)
        keep = lambda a, b: a if a.size == 0 else mx.where(active.reshape(-1, *([1] * (a.ndim - 1))), a, b)  # noqa: E731
        return (y, *[keep(a, b) for a, b in zip(new, state)])

    def _split(self, state: Sequence[mx.array]) -> tuple[mx.array, list, list[mx.array], list[mx.array]]:
        """A flat state in `_arrays` order as (upsample tail, SEANet tree, keys, values)."""
        n, L = len(state), len(self._tr.keys)
        return (state[0], _tree_from(self._seanet, list(state[1 : n - 2 * L])), list(state[n - 2 * L : n - L]),
                list(state[n - L :]))  # fmt: skip

    def _check_rows(self, rows: Sequence[int]) -> list[int]:
        out = []
        for r in rows:
            if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or not 0 <= r < self.rows:
                raise ValueError(f"rows must be integers in [0, {self.rows}), got {r!r}")
            out.append(int(r))
        if len(set(out)) != len(out):
            raise ValueError(f"rows must be distinct, got {out}")
        if not out:
            raise ValueError("rows is empty")
        return out


def _leaves(tree) -> list[mx.array]:
    return [a for t in tree for a in (_leaves(t) if isinstance(t, list) else [t])]


def _tree_from(shape, leaves: list):
    """`leaves` (in `_leaves` order) as a nested list shaped like `shape`; consumes `leaves`."""
    return [_tree_from(t, leaves) if isinstance(t, list) else leaves.pop(0) for t in shape]
