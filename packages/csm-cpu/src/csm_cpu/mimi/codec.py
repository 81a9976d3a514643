"""The Mimi codec on csm-cpu's kernels (spec/mimi.md): audio <-> codes [K, T], whole clip or
streaming decode, with fp32 or bf16 weights. Implements csm_core.protocols.AudioCodec exactly as
the numpy codec (csm_audio.mimi) does: same results within fp32 rounding, same streaming, same
errors for bad input (csm_core.codec_inputs).

Encode: SEANet -> transformer -> stride-2 downsample -> split RVQ.
Decode: split RVQ -> depthwise upsample -> transformer -> SEANet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from csm_core.codec_inputs import check_audio, check_codes, check_num_codebooks
from csm_core.config import MimiConfig, mimi
from csm_core.weights import canonical_mimi_weights, load_mimi_checkpoint, mimi_config_beside, to_float32

from ..backend import resolve_threads
from .layers import Conv, SplitRVQ, Transformer, Upsample
from .seanet import SEANetDecoder, SEANetEncoder

__all__ = ["Mimi", "MimiStreamingDecoder", "MimiBatchDecoder", "FORMATS"]

FORMATS = ("f32", "bf16")
_DECODE_CHUNK = 250  # frames per internal decode call (bounds memory on long clips)


class Mimi:
    """Mimi on csm-cpu's kernels; implements csm_core.protocols.AudioCodec.

    Mimi(config, weights, fmt="f32" | "bf16", threads=None) takes a weight dict in any supported
    layout (checked strictly); Mimi.from_checkpoint(path) reads a Kyutai, HF `kyutai/mimi` or HF
    CSM file. fmt="bf16" stores the conv and transformer weights in bf16 (half the bytes each
    streamed frame reads); codebooks stay fp32. threads: a count or "auto" (None: CSM_NUM_THREADS, else auto), as
    CpuBackend's (csm_cpu.backend.resolve_threads).
    """

    name = "cpu"

    def __init__(
        self, config: MimiConfig, weights: Mapping[str, np.ndarray], fmt: str = "f32", threads: int | None = None
    ):
        if fmt not in FORMATS:
            raise ValueError(f"Mimi weight format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        self.threads = resolve_threads(threads)
        w = {k: to_float32(np.asarray(v)) for k, v in canonical_mimi_weights(weights, config).items()}
        th = self.threads
        self.config, self.fmt = config, fmt
        self.sample_rate = config.sample_rate
        self.frame_size = config.frame_size
        self.num_codebooks = config.num_codebooks
        self.codebook_size = config.codebook_size
        s = config.downsample_stride
        self.encoder = SEANetEncoder(config, w, fmt, th)
        self.encoder_transformer = Transformer(config, w, "encoder_transformer", fmt, th)
        self.downsample = Conv(w["downsample.conv.conv.conv.weight"], None, s, fmt, th, pad_mode="replicate")
        self.quantizer = SplitRVQ(config, w, fmt, th)
        self.upsample = Upsample(w["upsample.convtr.convtr.convtr.weight"], s)
        self.decoder_transformer = Transformer(config, w, "decoder_transformer", fmt, th)
        self.decoder = SEANetDecoder(config, w, fmt, th)

    @classmethod
    def from_checkpoint(cls, path: str | Path, config: MimiConfig | None = None, fmt: str = "f32",
                        threads: int | None = None) -> "Mimi":
        """A Kyutai file, HF `kyutai/mimi` dir/file or HF CSM checkpoint; config from config.json
        beside it when not given, else the released Mimi."""
        config = config or mimi_config_beside(path) or mimi()
        return cls(config, load_mimi_checkpoint(path, config, dtype="float32"), fmt, threads)

    # ---- encode ----
    def encode(self, audio: np.ndarray, num_codebooks: int | None = None) -> np.ndarray:
        """1-D float audio at 24 kHz -> int64 codes [K, ceil(L/1920)]."""
        k = check_num_codebooks(num_codebooks, self.num_codebooks)
        return self.quantizer.encode(self._encode_latent(check_audio(audio, self.sample_rate)), k)

    def encode_latent(self, audio: np.ndarray) -> np.ndarray:
        """1-D audio -> unquantised latent [dimension, T] (after the downsample)."""
        return self._encode_latent(check_audio(audio, self.sample_rate)).T.copy()

    def _encode_latent(self, audio: np.ndarray) -> np.ndarray:
        x = self.encoder.forward(audio[:, None])  # [T25, d]
        x, _ = self.encoder_transformer.step(x, self.encoder_transformer.init_state())
        return self.downsample.step(x, self.downsample.init_state(), final=True)[0]  # [T, d]

    # ---- decode ----
    def decode(self, codes: np.ndarray) -> np.ndarray:
        """codes [K, T] (1 <= K <= 32) -> float32 audio [T·1920]."""
        codes = check_codes(codes, self.num_codebooks, self.codebook_size)
        dec = self.streaming_decoder()  # exact in any chunking
        parts = [dec.decode(codes[:, a : a + _DECODE_CHUNK]) for a in range(0, codes.shape[1], _DECODE_CHUNK)]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def streaming_decoder(self) -> "MimiStreamingDecoder":
        return MimiStreamingDecoder(self)

    def batch_streaming_decoder(self, max_rows: int) -> "MimiBatchDecoder":
        return MimiBatchDecoder(self, max_rows)


class _Stream:
    """The decoder state of one stream: upsample, transformer KV cache and position, SEANet."""

    def __init__(self, model: Mimi):
        self.up = model.upsample.init_state()
        self.tr = model.decoder_transformer.init_state()
        self.seanet = model.decoder.init_state()


def _decode_rows(model: Mimi, streams: list[_Stream], codes: list[np.ndarray]) -> np.ndarray:
    """Each stream's next frames (codes [K, f] each, the same f) -> audio [R, f·1920]; every
    product reads its weight once for all the streams."""
    R, f = len(streams), codes[0].shape[1]
    z = np.stack([model.quantizer.decode(c) for c in codes])  # [R, f, d] at 12.5 Hz
    x, ups = model.upsample.step_rows(z, [s.up for s in streams])  # [R, 2f, d]
    x, _ = model.decoder_transformer.step_rows(x, [s.tr for s in streams])
    y, seanets = model.decoder.step_rows(x, [s.seanet for s in streams])  # [R, f·1920, 1]
    for s, u, sn in zip(streams, ups, seanets):
        s.up, s.seanet = u, sn
    return np.ascontiguousarray(y[:, :, 0]).reshape(R, f * model.frame_size)


class MimiStreamingDecoder:
    """Decode frames as they arrive: decode(codes [K, n]) returns exactly the n·1920 samples a
    whole-clip decode gives for those frames. Implements csm_core.protocols.StreamingDecoder."""

    def __init__(self, model: Mimi):
        self.model = model
        self.reset()

    def reset(self) -> None:
        self._stream = _Stream(self.model)

    @property
    def frames(self) -> int:
        """Frames decoded since the last reset."""
        return self._stream.tr.offset // self.model.config.downsample_stride

    def decode(self, codes: np.ndarray) -> np.ndarray:
        m = self.model
        codes = check_codes(codes, m.num_codebooks, m.codebook_size)
        if codes.shape[1] == 0:
            return np.zeros(0, np.float32)
        return _decode_rows(m, [self._stream], [codes])[0]


class MimiBatchDecoder:
    """Several independent streams (rows 0..max_rows-1) decoded together; each row's output equals
    its own MimiStreamingDecoder's: decode(rows, codes [n, K, f]) advances the given rows together,
    each product reading its weight once for all of them (continuous batching: rows join with
    reset_row and leave by not being passed)."""

    def __init__(self, model: Mimi, max_rows: int):
        if isinstance(max_rows, bool) or int(max_rows) != max_rows or max_rows < 1:
            raise ValueError(f"max_rows must be an integer >= 1, got {max_rows!r}")
        self.model, self.max_rows = model, int(max_rows)
        self._streams = [_Stream(model) for _ in range(self.max_rows)]

    def reset_row(self, row: int) -> None:
        self._check_row(row)
        self._streams[row] = _Stream(self.model)

    def reset(self) -> None:
        self._streams = [_Stream(self.model) for _ in range(self.max_rows)]

    def _check_row(self, row: Any) -> int:
        if isinstance(row, bool) or int(row) != row or not 0 <= row < self.max_rows:
            raise ValueError(f"row must be an integer from 0 to {self.max_rows - 1}, got {row!r}")
        return int(row)

    def decode(self, rows, codes: np.ndarray) -> np.ndarray:
        """rows: n distinct row indices; codes [n, K, f] -> float32 [n, f·1920]."""
        m = self.model
        rows = [self._check_row(r) for r in rows]
        if len(set(rows)) != len(rows):
            raise ValueError(f"rows must be distinct, got {rows}")
        c = np.asarray(codes)
        if c.ndim != 3 or c.shape[0] != len(rows):
            raise ValueError(f"codes must be [rows ({len(rows)}), num_codebooks, frames], got shape {c.shape}")
        checked = [check_codes(c[i], m.num_codebooks, m.codebook_size) for i in range(len(rows))]
        if not rows or c.shape[2] == 0:
            return np.zeros((len(rows), 0), np.float32)
        return _decode_rows(m, [self._streams[r] for r in rows], checked)
