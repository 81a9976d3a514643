"""The Mimi codec (spec/mimi.md): audio <-> codes [K, T], whole clip or streaming decode.

Encode: SEANet -> transformer -> stride-2 downsample -> split RVQ.
Decode: split RVQ -> depthwise upsample -> transformer -> SEANet.
Activations are time-major [T, C] float32 throughout (see ops.py).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Mapping

import numpy as np

try:
    from threadpoolctl import ThreadpoolController
except ImportError:  # optional: without it BLAS keeps its thread count
    ThreadpoolController = None

from csm_core.config import MimiConfig, mimi
from csm_core.weights import mimi_config_beside

from .checkpoint import canonical_weights, load_weights
from .ops import Conv1d, ConvTranspose1d
from .quantizer import SplitRVQ
from .seanet import SEANetDecoder, SEANetEncoder
from .transformer import Transformer

__all__ = ["Mimi", "MimiStreamingDecoder", "MimiStreamingEncoder"]

_DECODE_CHUNK = 250  # frames (20 s) per internal decode call
_FEW_FRAMES = 4  # streaming calls this small run BLAS on one thread
_BLAS: Any = None


def _one_blas_thread():
    """BLAS on one thread for a few-frame streaming call: its products are weight-streaming
    vector products that gain nothing from a second thread, while a spinning BLAS pool made a
    frame 4-10x slower whenever the machine was busy (measured, 2 cores)."""
    global _BLAS
    if ThreadpoolController is None:
        return contextlib.nullcontext()
    if _BLAS is None:
        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


class Mimi:
    """Numpy Mimi; implements csm_core.protocols.AudioCodec.

    Mimi(config, weights) takes a weight dict in any supported layout (checked strictly);
    Mimi.from_checkpoint(path) reads a Kyutai, HF `kyutai/mimi` or HF CSM safetensors file.
    """

    def __init__(self, config: MimiConfig, weights: Mapping[str, np.ndarray]):
        w = canonical_weights(weights, config)
        self.config = config
        self.sample_rate = config.sample_rate
        self.frame_size = config.frame_size
        self.num_codebooks = config.num_codebooks
        self.codebook_size = config.codebook_size
        s = config.downsample_stride
        self.encoder = SEANetEncoder(config, w)
        self.encoder_transformer = Transformer(config, w, "encoder_transformer")
        self.downsample = Conv1d(w["downsample.conv.conv.conv.weight"], None, s, pad_mode="replicate")
        self.quantizer = SplitRVQ(config, w)
        self.upsample = ConvTranspose1d(w["upsample.convtr.convtr.convtr.weight"], None, s, groups=config.dimension)
        self.decoder_transformer = Transformer(config, w, "decoder_transformer")
        self.decoder = SEANetDecoder(config, w)

    @classmethod
    def from_checkpoint(cls, path: str | Path, config: MimiConfig | None = None) -> "Mimi":
        """A Kyutai file, HF `kyutai/mimi` dir/file or HF CSM checkpoint; config from config.json
        beside it when not given, else the released Mimi."""
        config = config or mimi_config_beside(path) or mimi()
        return cls(config, load_weights(path, config))

    # ---- encode ----
    def encode(self, audio: np.ndarray, num_codebooks: int | None = None) -> np.ndarray:
        """1-D float audio at 24 kHz -> int64 codes [K, ceil(L/1920)]."""
        k = self._check_num_codebooks(num_codebooks)
        return self.quantizer.encode(self._encode_latent(self._check_audio(audio)), k)

    def encode_latent(self, audio: np.ndarray) -> np.ndarray:
        """1-D audio -> unquantised latent [dimension, T] (after the downsample)."""
        return self._encode_latent(self._check_audio(audio)).T.copy()

    def encode_stages(self, audio: np.ndarray) -> dict[str, np.ndarray]:
        """Intermediate encoder outputs, channel-first like torch: seanet [d, T25], transformer [d, T25],
        latent [d, T], for parity tests."""
        x = self.encoder.forward(self._check_audio(audio)[:, None])
        y = self.encoder_transformer.forward(x)
        z = self.downsample.forward(y)
        return {"seanet": x.T.copy(), "transformer": y.T.copy(), "latent": z.T.copy()}

    def _encode_latent(self, audio: np.ndarray) -> np.ndarray:
        x = self.encoder.forward(audio[:, None])  # [T25, d]
        x = self.encoder_transformer.forward(x)
        return self.downsample.forward(x)  # [T, d]

    # ---- decode ----
    def decode(self, codes: np.ndarray) -> np.ndarray:
        """codes [K, T] (1 <= K <= 32) -> float32 audio [T·1920]."""
        codes = self._check_codes(codes)
        dec = self.streaming_decoder()  # exact in any chunking; chunks bound memory on long clips
        parts = [dec.decode(codes[:, a : a + _DECODE_CHUNK]) for a in range(0, codes.shape[1], _DECODE_CHUNK)]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def decode_stages(self, codes: np.ndarray) -> dict[str, np.ndarray]:
        """Intermediate decoder outputs (channel-first): latent [d, T], transformer [d, 2T], audio [L]."""
        codes = self._check_codes(codes)
        z = self.quantizer.decode(codes)
        y = self.decoder_transformer.forward(self.upsample.forward(z))
        audio = self.decoder.forward(y)[:, 0]
        return {"latent": z.T.copy(), "transformer": y.T.copy(), "audio": audio}

    def streaming_decoder(self) -> "MimiStreamingDecoder":
        return MimiStreamingDecoder(self)

    def streaming_encoder(self, num_codebooks: int | None = None) -> "MimiStreamingEncoder":
        return MimiStreamingEncoder(self, num_codebooks)

    # ---- input checks at the boundary ----
    def _check_num_codebooks(self, k: int | None) -> int:
        k = self.num_codebooks if k is None else k
        if isinstance(k, bool) or int(k) != k or not 1 <= k <= self.num_codebooks:
            raise ValueError(f"num_codebooks must be an integer from 1 to {self.num_codebooks}, got {k!r}")
        return int(k)

    def _check_audio(self, audio: Any) -> np.ndarray:
        a = np.asarray(audio)
        if a.ndim == 2 and 1 in a.shape:
            a = a.reshape(-1)
        if a.ndim != 1:
            raise ValueError(f"audio must be 1-D mono samples at {self.sample_rate} Hz, got shape {a.shape}")
        if a.size == 0:
            raise ValueError("audio is empty (0 samples); nothing to encode")
        if a.dtype.kind != "f":
            hint = " (integer PCM? divide by 32768 first)" if a.dtype.kind in "iu" else ""
            raise ValueError(f"audio must be float samples in [-1, 1], got dtype {a.dtype}{hint}")
        a = a.astype(np.float32)
        bad = ~np.isfinite(a)
        if bad.any():
            raise ValueError(f"audio holds {int(bad.sum())} NaN/inf samples (first at index {int(np.argmax(bad))})")
        return a

    def _check_codes(self, codes: Any) -> np.ndarray:
        c = np.asarray(codes)
        if c.ndim != 2:
            raise ValueError(f"codes must be a 2-D array [num_codebooks, frames], got shape {c.shape}")
        if c.dtype.kind not in "iu":
            raise ValueError(f"codes must be integers, got dtype {c.dtype}")
        if not 1 <= c.shape[0] <= self.num_codebooks:
            raise ValueError(f"codes have {c.shape[0]} codebooks (shape {c.shape}); expected 1 to {self.num_codebooks}")
        if c.size and (c.min() < 0 or c.max() >= self.codebook_size):
            bad = (c < 0) | (c >= self.codebook_size)
            k, t = np.argwhere(bad)[0]
            raise ValueError(
                f"code {int(c[k, t])} at codebook {k}, frame {t} is out of range [0, {self.codebook_size})"
            )
        return c.astype(np.int64)


class MimiStreamingDecoder:
    """Decode frames as they arrive: decode(codes [K, n]) returns exactly the n·1920 samples a
    whole-clip decode gives for those frames. Implements csm_core.protocols.StreamingDecoder."""

    def __init__(self, model: Mimi):
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
        with _one_blas_thread() if codes.shape[1] <= _FEW_FRAMES else contextlib.nullcontext():
            z = m.quantizer.decode(codes)  # [n, d] at 12.5 Hz
            x, self._up = m.upsample.step(z, self._up)  # [2n, d]
            x, self._tr = m.decoder_transformer.step(x, self._tr)
            y, self._seanet = m.decoder.step(x, self._seanet)  # [n·1920, 1]
        return np.ascontiguousarray(y[:, 0])


class MimiStreamingEncoder:
    """Encode audio as it arrives: encode(chunk) returns the codes [K, n] of every frame completed so
    far (any chunk length; samples are buffered to whole 1920-sample frames), and flush() those of a
    final partial frame, padded exactly as a whole-clip encode pads it. The concatenation equals
    Mimi.encode of the whole stream."""

    def __init__(self, model: Mimi, num_codebooks: int | None = None):
        self.model = model
        self.num_codebooks = model._check_num_codebooks(num_codebooks)
        self.reset()

    def reset(self) -> None:
        m = self.model
        self._buffer = np.zeros(0, np.float32)
        self._total = 0  # samples received
        self._seanet = m.encoder.init_state()
        self._tr = m.encoder_transformer.init_state()
        self._down = m.downsample.init_state()

    def encode(self, audio: np.ndarray) -> np.ndarray:
        m = self.model
        a = m._check_audio(audio) if np.size(audio) else np.zeros(0, np.float32)
        self._buffer = np.concatenate([self._buffer, a])
        self._total += a.size
        n = self._buffer.size // m.frame_size * m.frame_size
        if n == 0:
            return np.zeros((self.num_codebooks, 0), np.int64)
        chunk, self._buffer = self._buffer[:n], self._buffer[n:]
        x, self._seanet = m.encoder.step(chunk[:, None], self._seanet)
        x, self._tr = m.encoder_transformer.step(x, self._tr)
        z, self._down = m.downsample.step(x, self._down)
        return m.quantizer.encode(z, self.num_codebooks)

    def flush(self) -> np.ndarray:
        """Codes of the final partial frame ([K, 0] if the stream ended on a frame boundary); resets."""
        m = self.model
        if self._buffer.size == 0:
            self.reset()
            return np.zeros((self.num_codebooks, 0), np.int64)
        x = m.encoder.finish(self._buffer[:, None], self._seanet, self._total)
        x, _ = m.encoder_transformer.step(x, self._tr)
        total_steps = -(-self._total // m.config.hop_length)
        z = m.downsample.finish(x, self._down, total_steps)
        codes = m.quantizer.encode(z, self.num_codebooks)
        self.reset()
        return codes
