"""The Mimi codec (spec/mimi.md): audio <-> codes [K, T], whole clip or streaming decode.

Encode: SEANet -> transformer -> stride-2 downsample -> split RVQ.
Decode: split RVQ -> depthwise upsample -> transformer -> SEANet.
Activations are time-major [T, C] float32 throughout (see conv.py).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from csm_core.codec_inputs import check_audio, check_codes, check_num_codebooks
from csm_core.config import MimiConfig, mimi
from csm_core.weights import mimi_config_beside

from .batch import MimiBatchStreamingDecoder
from .checkpoint import canonical_weights, load_weights
from .conv import Conv1d, ConvTranspose1d
from .layout import pack_weights
from .quantizer import SplitRVQ
from .seanet import SEANetDecoder, SEANetEncoder
from .threads import one_blas_thread, pair_default, pair_forced
from .transformer import Transformer

__all__ = ["Mimi", "MimiStreamingDecoder", "MimiStreamingEncoder", "MimiBatchStreamingDecoder"]

_DECODE_CHUNK = 250  # frames (20 s) per internal decode call
_FEW_FRAMES = 4  # streaming calls this small run BLAS on one thread
_PROBE_EVERY = 8  # an adaptive streaming decoder times the other mode once every this many calls


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
        self._pack_decoder_weights()

    def _pack_decoder_weights(self) -> None:
        """Streaming decode reads every decoder weight per frame: keep them in one huge-page buffer."""
        layers = self.decoder_transformer.layers
        convs = [self.decoder.first, self.decoder.last] + [
            c for up, res in self.decoder.stages for c in (res.conv1, res.conv2)
        ]
        ups = [up for up, _ in self.decoder.stages]
        names = ("w_in", "w_out", "w1", "w2")
        packed = iter(
            pack_weights(
                [getattr(layer, n) for layer in layers for n in names]
                + [c.w_flat for c in convs]
                + [up.w for up in ups]
            )
        )
        for layer in layers:
            for n in names:
                setattr(layer, n, next(packed))
        for c in convs:
            c.set_matrix(next(packed))
        for up in ups:
            up.w = next(packed)

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
        x = self.encoder.forward(self._check_audio(audio)[:, None], split=pair_default())
        y = self.encoder_transformer.forward(x)
        z = self.downsample.forward(y)
        return {"seanet": x.T.copy(), "transformer": y.T.copy(), "latent": z.T.copy()}

    def _encode_latent(self, audio: np.ndarray) -> np.ndarray:
        x = self.encoder.forward(audio[:, None], split=pair_default())  # [T25, d]
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

    def streaming_decoder(self, paired: bool | None = None) -> "MimiStreamingDecoder":
        """paired: split few-frame calls over a helper thread (default: $CSM_AUDIO_PAIR, else on
        with >= 2 CPUs); see MimiStreamingDecoder."""
        return MimiStreamingDecoder(self, paired)

    def batch_streaming_decoder(self, rows: int, paired: bool | None = None) -> "MimiBatchStreamingDecoder":
        """`rows` independent streaming decodes advanced together (csm_core BatchStreamingDecoder);
        paired: share the work with the helper thread (default as streaming_decoder)."""
        return MimiBatchStreamingDecoder(self, rows, paired)

    def streaming_encoder(self, num_codebooks: int | None = None) -> "MimiStreamingEncoder":
        return MimiStreamingEncoder(self, num_codebooks)

    # ---- input checks at the boundary (shared with every Mimi: csm_core.codec_inputs) ----
    def _check_num_codebooks(self, k: int | None) -> int:
        return check_num_codebooks(k, self.num_codebooks)

    def _check_audio(self, audio: Any) -> np.ndarray:
        return check_audio(audio, self.sample_rate)

    def _check_codes(self, codes: Any) -> np.ndarray:
        return check_codes(codes, self.num_codebooks, self.codebook_size)


class MimiStreamingDecoder:
    """Decode frames as they arrive: decode(codes [K, n]) returns exactly the n·1920 samples a
    whole-clip decode gives for those frames. Implements csm_core.protocols.StreamingDecoder.

    Calls of at most 4 frames run BLAS on one thread and may use one helper thread: the rows of
    their products split in two halves (linalg.matmul(paired=True)), and the SEANet tail in two
    streams (SEANetDecoder.step). paired=True forces that on, False off; None (default) follows
    $CSM_AUDIO_PAIR (0/1) or, unset, is on with >= 2 CPUs but keeps timing both ways and uses the
    faster: a helper thread only pays while the second core is free.
    """

    def __init__(self, model: Mimi, paired: bool | None = None):
        self.model = model
        self.paired = pair_default() if paired is None else bool(paired)
        self._adaptive = paired is None and pair_forced() is None and self.paired
        self._cost: dict[bool, float] = {}  # mode -> recent seconds per frame (exponential average)
        self._calls = 0
        self.reset()

    def _use_helper(self) -> bool:
        """Paired or not for the next few-frame call: the faster of the two lately, with every
        _PROBE_EVERY-th call (and the first two) taking the other mode to keep its timing current."""
        if not self._adaptive:
            return self.paired
        self._calls += 1
        best = min(self._cost, key=self._cost.get) if len(self._cost) == 2 else self._calls % 2 == 0
        return (not best) if self._calls % _PROBE_EVERY == 0 else best

    def _record(self, mode: bool, seconds: float) -> None:
        old = self._cost.get(mode)
        self._cost[mode] = seconds if old is None else 0.7 * old + 0.3 * seconds

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
        few = codes.shape[1] <= _FEW_FRAMES
        pair = self._use_helper() if few else self.paired
        t0 = time.perf_counter()
        halves = few and pair  # products and passes split in two over the helper thread
        with one_blas_thread() if few else contextlib.nullcontext():
            z = m.quantizer.decode(codes, halves)  # [n, d] at 12.5 Hz
            x, self._up = m.upsample.step(z, self._up)  # [2n, d]
            x, self._tr = m.decoder_transformer.step(x, self._tr, halves)
            y, self._seanet = m.decoder.step(x, self._seanet, split=pair, paired=halves)  # [n·1920, 1]
        if few and self._adaptive:
            self._record(pair, (time.perf_counter() - t0) / codes.shape[1])
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
