"""The seams between packages. Backends, codecs, tokenizers and watermarkers implement these;
csm-core's generation loop and csm-app talk to them only through these methods.

Array conventions:
- frame tokens / mask: int64 / bool arrays [B, S, K+1]; columns 0..K-1 audio codes, column K text.
- codes: int arrays [K, T] for one clip (codec), [B, K] for one generated frame (backend).
- audio: float32 1-D at the codec's sample rate, nominally in [-1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Protocol, runtime_checkable

import numpy as np

from .config import CSMConfig

__all__ = [
    "TextTokenizer",
    "SamplingParams",
    "FrameModel",
    "LogitsProbe",
    "AudioCodec",
    "StreamingDecoder",
    "Watermarker",
    "WatermarkResult",
]


@runtime_checkable
class TextTokenizer(Protocol):
    bos_id: int
    eos_id: int
    vocab_size: int

    def encode(self, text: str, *, bos: bool = False, eos: bool = False, allow_special: bool = False) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def token_to_id(self, token: str) -> int: ...


@dataclass(frozen=True)
class SamplingParams:
    """How a backend picks each code. temperature 0 means greedy (argmax).

    mask_undecodable: give codes >= codec_size (2048..2050, which Mimi cannot decode) zero
    probability. A deliberate deviation from the official code, which never masks them.
    """

    temperature: float = 0.9
    topk: int = 50
    mask_undecodable: bool = True
    codec_size: int = 2048

    def __post_init__(self) -> None:
        if not (self.temperature >= 0 and np.isfinite(self.temperature)):
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if int(self.topk) != self.topk or self.topk < 1:
            raise ValueError(f"topk must be an integer >= 1, got {self.topk!r}")
        if isinstance(self.codec_size, bool) or int(self.codec_size) != self.codec_size or self.codec_size < 1:
            raise ValueError(f"codec_size must be an integer >= 1, got {self.codec_size!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@runtime_checkable
class FrameModel(Protocol):
    """A CSM backend: holds weights and KV caches, produces one 32-code frame per call.

    Usage: reset(batch_size, seed) → generate_frame(prompt tokens, mask) → generate_frame(last frame
    as [B, 1, K+1] tokens, mask) → ... Positions advance by the number of rows fed each call.
    """

    config: CSMConfig
    name: str

    def reset(self, batch_size: int = 1, seed: int | None = None) -> None: ...

    @property
    def position(self) -> int: ...

    def generate_frame(self, tokens: np.ndarray, mask: np.ndarray, params: SamplingParams) -> np.ndarray:
        """Feed [B, S, K+1] tokens at the current position; return [B, K] int32 codes.

        Batches of prompts with different lengths are left-padded: a position whose mask row is
        all False is padding and is never attended to (it still takes a position slot).
        """
        ...


@runtime_checkable
class LogitsProbe(Protocol):
    """Optional backend hook used by parity tests and benchmarks."""

    def teacher_forced_logits(
        self, tokens: np.ndarray, mask: np.ndarray, codes: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """From empty caches run tokens/mask [B, S, K+1]; return float32 c0 logits [B, V] at the
        last position and depth logits [B, K-1, V] when the decoder is fed codes [B, K]."""
        ...


@runtime_checkable
class StreamingDecoder(Protocol):
    def decode(self, codes: np.ndarray) -> np.ndarray:
        """codes [K, n] → exactly the n·frame_size samples a whole-clip decode gives there."""
        ...

    def reset(self) -> None: ...


@runtime_checkable
class AudioCodec(Protocol):
    sample_rate: int
    frame_size: int
    num_codebooks: int
    codebook_size: int

    def encode(self, audio: np.ndarray, num_codebooks: int | None = None) -> np.ndarray:
        """1-D float audio at sample_rate → int64 codes [K, ceil(L/frame_size)]."""
        ...

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """codes [K, T] → float32 audio [T·frame_size]."""
        ...

    def streaming_decoder(self) -> StreamingDecoder: ...


@dataclass(frozen=True)
class WatermarkResult:
    found: bool
    payload: int | None
    score: float
    reason: str = ""
    details: dict[str, Any] | None = None


@runtime_checkable
class Watermarker(Protocol):
    def embed(self, audio: np.ndarray, sample_rate: int, start_sample: int = 0) -> np.ndarray:
        """Mark audio; start_sample is audio[0]'s position in a longer stream marked chunk by chunk."""
        ...

    def detect(self, audio: np.ndarray, sample_rate: int) -> WatermarkResult: ...
