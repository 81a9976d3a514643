"""The seams between packages. Backends, codecs, tokenizers and watermarkers implement these;
csm-core's generation loop and csm-app talk to them only through these methods.

Array conventions:
- frame tokens / mask: int64 / bool arrays [B, S, K+1]; columns 0..K-1 audio codes, column K text.
- codes: int arrays [K, T] for one clip (codec), [B, K] for one generated frame (backend).
- audio: float32 1-D at the codec's sample rate, nominally in [-1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Protocol, Sequence, runtime_checkable

import numpy as np

from .config import CSMConfig

__all__ = [
    "TextTokenizer",
    "SamplingParams",
    "FrameModel",
    "BackendClass",
    "SlotFeed",
    "SlotModel",
    "LogitsProbe",
    "AudioCodec",
    "StreamingDecoder",
    "BatchStreamingDecoder",
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
class BackendClass(Protocol):
    """What an entry point of the `csm.backends` group loads: a FrameModel class that describes
    itself, so that the app (`auto`, `convert`, model discovery, `csm info`) reads these instead of
    knowing backends by name. Installing a package that registers one is what makes it available.

    quants: weight formats it builds from canonical weights, in the app's vocabulary ("f32",
    "bf16", "q8_0", "q4_0", "q4_k", ...); default_quant: the one used when none is asked for;
    file_layout: the name of its own converted files' layout ("gguf", "mlx"), or None;
    file_patterns: glob patterns of such files in a model directory.
    """

    name: str
    quants: tuple[str, ...]
    default_quant: str
    file_layout: str | None
    file_patterns: tuple[str, ...]

    @classmethod
    def preference(cls) -> int:
        """How well it suits this machine: `auto` picks the highest; < 0 means never by `auto`."""
        ...

    @classmethod
    def build(cls, config: CSMConfig, weights: Any, *, quant: str | None = None, threads: int | None = None,
              **options: Any) -> FrameModel:  # fmt: skip
        """A loaded model from canonical weights (quant None: default_quant)."""
        ...

    @classmethod
    def recognizes(cls, path: Any) -> bool:
        """Whether `path` is one of its converted files (cheap: a suffix or a header)."""
        ...

    @classmethod
    def open_file(cls, path: Any, *, threads: int | None = None) -> FrameModel:
        """A loaded model from one of its converted files."""
        ...

    @classmethod
    def convert(cls, config: CSMConfig, weights: Any, dst: Any, *, quant: str | None = None, **options: Any) -> Any:
        """Write canonical weights as its converted file `dst`; returns the path written."""
        ...

    @classmethod
    def describe(cls) -> str:
        """One line for `csm info`: what it runs on here (instruction set, device)."""
        ...


@dataclass(frozen=True)
class SlotFeed:
    """Rows for one slot in one `SlotModel.step` call: tokens int64 [S, K+1] and mask bool [S, K+1]
    at the slot's current position (S >= 1). With `params`, a frame is sampled from the last
    row's state after feeding; without, the rows are only fed (a chunk of a prompt)."""

    slot: int
    tokens: np.ndarray
    mask: np.ndarray
    params: SamplingParams | None = None


@runtime_checkable
class SlotModel(Protocol):
    """A backend that holds `slots` independent rows (continuous batching): each slot has its own
    position, KV cache, sampling parameters and random stream; requests join and leave a slot
    between `step` calls without disturbing the others.

    Usage: open_slots(n) once → admit(slot, seed, prompt) → step([SlotFeed, ...]) per frame (each
    running slot feeds its last frame with params; a joining slot feeds prompt chunks, the last one
    with params) → admit() again for the next request in that slot. A free slot is simply not fed.

    Determinism: a slot's codes depend only on its own rows, its params and its seed: the same
    request gives the same codes in any slot, next to any others, and as `reset(1, seed)` on the
    FrameModel path (bit-exact where the backend's products are batch-independent, as on csm-cpu).
    """

    config: CSMConfig
    name: str

    @property
    def slots(self) -> int: ...

    def open_slots(self, slots: int) -> None:
        """Allocate caches for `slots` rows (all free), replacing any batch or slots held before."""
        ...

    def admit(self, slot: int, seed: int, tokens: np.ndarray, mask: np.ndarray) -> int:
        """Start a request in `slot` with the random stream of `seed`, for the prompt tokens/mask
        [S, K+1] it will feed. Returns how many leading prompt rows the slot's cache already holds
        (prompt-prefix reuse, at most S - 1; 0 if the backend cannot reuse): the slot's position is
        then that number and the caller feeds only the rest."""
        ...

    def slot_position(self, slot: int) -> int: ...

    def step(self, feeds: Sequence[SlotFeed]) -> np.ndarray:
        """Feed every slot's rows (at most one feed per slot), then sample a frame for each feed
        that has params: int32 [n, K], one row per such feed, in feed order."""
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
class BatchStreamingDecoder(Protocol):
    """Several independent streaming decodes advanced together (each weight read once per call for
    all rows); each row's output equals its own `StreamingDecoder` on the same codes.

    Optional attribute ``decode_every_step`` (default False): True where a call costs about the
    same whatever rows and frames it holds (a GPU decoder running every row at one compiled
    shape); the scheduler then decodes each step's new frames at once, one frame per call."""

    rows: int

    def reset_row(self, row: int) -> None:
        """Start a new stream in `row` (its state is emptied)."""
        ...

    def decode(self, rows: Sequence[int], codes: np.ndarray) -> np.ndarray:
        """codes [n, K, f] for the n distinct `rows` → float32 [n, f·frame_size]."""
        ...


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

    # Optional: `batch_streaming_decoder(rows) -> BatchStreamingDecoder`. Callers fall back to one
    # StreamingDecoder per row where a codec lacks it.


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
