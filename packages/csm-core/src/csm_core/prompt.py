"""Prompt frames for CSM, exactly as the official generator builds them (spec/csm.md §2).

A frame is one row of K+1 tokens (K = 32 codebooks, column K = text) with a boolean mask row:
- text segment: `tokenizer.encode(f"[{speaker}]{text}", bos=True, eos=True)`, one frame per token,
  the id in column K, mask only column K;
- audio: Mimi codes [K, T] as T frames in columns 0..K-1, then one all-zero EOS frame, mask
  columns 0..K-1;
- a prompt = each context segment's text frames then its audio frames, then the target's text frames.

The context window: CSM has 2048 positions. Like the official code, a request for `max_frames`
audio frames allows a prompt of at most `window - max_frames - 1` frames (`prompt_len >= 2048 -
max_gen` raises there). `fit_prompt` drops whole context segments (oldest first) until the prompt
fits, and raises `ContextOverflowError` with the numbers when the target text alone cannot fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral
from typing import Sequence

import numpy as np

from .config import CSMConfig
from .protocols import AudioCodec, TextTokenizer
from .segment import Segment

__all__ = [
    "PromptFrames",
    "ContextOverflowError",
    "check_speaker",
    "text_frames",
    "audio_frames",
    "segment_frames",
    "max_prompt_frames",
    "fit_prompt",
    "left_pad",
    "HeldRows",
]


class ContextOverflowError(ValueError):
    """The prompt plus the requested audio length cannot fit the model's position window."""


@dataclass(frozen=True)
class PromptFrames:
    """A run of prompt frames: tokens int64 [S, K+1] and mask bool [S, K+1]."""

    tokens: np.ndarray
    mask: np.ndarray

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @staticmethod
    def concat(parts: Sequence["PromptFrames"]) -> "PromptFrames":
        """The frames of `parts` (at least one) one after another."""
        return PromptFrames(np.concatenate([p.tokens for p in parts]), np.concatenate([p.mask for p in parts]))


def check_speaker(speaker: object, where: str = "speaker") -> int:
    """`speaker` as an int, or a clear error: it must be a non-negative integer (not a bool)."""
    if isinstance(speaker, bool) or not isinstance(speaker, Integral):
        raise TypeError(f"{where} must be a non-negative integer, got {type(speaker).__name__} {speaker!r}")
    if speaker < 0:
        raise ValueError(f"{where} must be a non-negative integer, got {speaker}")
    return int(speaker)


def text_frames(tokenizer: TextTokenizer, speaker: int, text: str, config: CSMConfig) -> PromptFrames:
    """Frames for "[speaker]text" with bos/eos: ids in column K, mask column K only."""
    speaker = check_speaker(speaker)
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    K = config.audio_num_codebooks
    ids = np.asarray(tokenizer.encode(f"[{speaker}]{text}", bos=True, eos=True), dtype=np.int64)
    if ids.ndim != 1 or ids.size == 0:
        raise ValueError(f"tokenizer returned no ids for {text!r}")
    bad = ids[(ids < 0) | (ids >= config.text_vocab_size)]
    if bad.size:
        raise ValueError(
            f"tokenizer produced id {int(bad[0])} outside the model's text vocabulary "
            f"[0, {config.text_vocab_size}): tokenizer and model do not match"
        )
    tokens = np.zeros((ids.size, K + 1), np.int64)  # [S, K+1]
    tokens[:, K] = ids
    mask = np.zeros((ids.size, K + 1), bool)
    mask[:, K] = True
    return PromptFrames(tokens, mask)


def audio_frames(codes: np.ndarray, config: CSMConfig) -> PromptFrames:
    """Frames for codes [K, T]: T code frames plus the all-zero EOS frame, mask columns 0..K-1."""
    K = config.audio_num_codebooks
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[0] != K or not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"audio codes must be an integer array [{K}, T], got {codes.dtype} {codes.shape}")
    if codes.size and (codes.min() < 0 or codes.max() >= config.audio_vocab_size):
        raise ValueError(
            f"audio codes must lie in [0, {config.audio_vocab_size}), got [{codes.min()}, {codes.max()}]"
        )
    T = codes.shape[1]
    tokens = np.zeros((T + 1, K + 1), np.int64)  # last row stays zero: the EOS frame
    tokens[:T, :K] = codes.T
    mask = np.zeros((T + 1, K + 1), bool)
    mask[:, :K] = True
    return PromptFrames(tokens, mask)


def segment_frames(
    segment: Segment, tokenizer: TextTokenizer, codec: AudioCodec | None, config: CSMConfig, where: str = "segment"
) -> PromptFrames:
    """A context segment: its text frames then its audio frames (`segment.codes` if given, else
    `codec.encode(segment.audio)`). A context segment must carry audio or codes."""
    if not isinstance(segment, Segment):
        raise TypeError(f"{where} must be a csm_core.Segment, got {type(segment).__name__}")
    check_speaker(segment.speaker, f"{where}.speaker")
    if segment.codes is not None:
        codes = segment.codes
    elif segment.audio is not None:
        if codec is None:
            raise ValueError(f"{where} has audio but no codec was given to encode it; pass a codec or Segment.codes")
        codes = codec.encode(segment.audio, num_codebooks=config.audio_num_codebooks)
    else:
        raise ValueError(
            f"{where} ({segment.text[:40]!r}) has neither audio nor codes; context segments need the "
            "audio of what was said (the official generator has no text-only context)"
        )
    try:
        audio = audio_frames(codes, config)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    text = text_frames(tokenizer, segment.speaker, segment.text, config)
    return PromptFrames.concat([text, audio])


def max_prompt_frames(window: int, max_frames: int) -> int:
    """Largest prompt the official rule allows: prompt_len < window - max_frames."""
    return window - max_frames - 1


def fit_prompt(
    context: Sequence[PromptFrames],
    target: PromptFrames,
    max_len: int,
    drop_order: Sequence[int] | None = None,
) -> list[int]:
    """Indices of the context segments to keep (in their original order) so that the kept
    segments plus `target` hold at most `max_len` frames. Segments are dropped whole, in
    `drop_order` (default oldest first). Raises ContextOverflowError when `target` alone is too long."""
    if len(target) > max_len:
        raise ContextOverflowError(
            f"the target text takes {len(target)} prompt frames but at most {max_len} fit "
            f"(window minus the requested audio length); shorten the text, split it into sentences, "
            "or lower max_audio_ms"
        )
    order = list(range(len(context))) if drop_order is None else list(drop_order)
    if sorted(order) != list(range(len(context))):
        raise ValueError(f"drop_order must be a permutation of range({len(context)}), got {order}")
    kept = set(range(len(context)))
    total = len(target) + sum(len(c) for c in context)
    for i in order:
        if total <= max_len:
            break
        kept.discard(i)
        total -= len(context[i])
    return sorted(kept)


def left_pad(prompts: Sequence[PromptFrames]) -> tuple[np.ndarray, np.ndarray]:
    """Batch prompts of different lengths: tokens int64 [B, S, K+1], mask bool [B, S, K+1],
    left-padded with all-zero tokens and all-False mask rows (padding, never attended to)."""
    S = max(len(p) for p in prompts)
    width = prompts[0].tokens.shape[1]
    tokens = np.zeros((len(prompts), S, width), np.int64)
    mask = np.zeros((len(prompts), S, width), bool)
    for b, p in enumerate(prompts):
        tokens[b, S - len(p) :] = p.tokens
        mask[b, S - len(p) :] = p.mask
    return tokens, mask


class HeldRows:
    """The prompt rows a backend's KV cache holds, position by position (tokens and mask
    [B, window, K+1]), for prompt-prefix reuse: after a reset, the leading rows of a new prompt
    equal to the held ones at the same positions need not be computed again."""

    def __init__(self, batch_size: int, window: int, width: int):
        self.tokens = np.zeros((batch_size, window, width), np.int64)
        self.mask = np.zeros(self.tokens.shape, bool)

    def record(self, start: int, tokens: np.ndarray, mask: np.ndarray) -> None:
        """Rows [B, S, K+1] fed to the cache at positions start .. start + S."""
        self.tokens[:, start : start + tokens.shape[1]] = tokens
        self.mask[:, start : start + tokens.shape[1]] = mask

    def shared_prefix(self, tokens: np.ndarray, mask: np.ndarray, filled: int) -> int:
        """How many leading positions of a new prompt equal the first `filled` held rows; at most
        S - 1, since the last position always runs (its state feeds the decoder)."""
        n = min(tokens.shape[1] - 1, filled)
        if n <= 0:
            return 0
        same = (self.tokens[:, :n] == tokens[:, :n]).all(axis=(0, 2))
        same &= (self.mask[:, :n] == mask[:, :n]).all(axis=(0, 2))
        return n if same.all() else int(np.argmin(same))

    def record_row(self, row: int, start: int, tokens: np.ndarray, mask: np.ndarray) -> None:
        """One slot's rows [S, K+1] fed at positions start .. start + S (continuous batching)."""
        self.tokens[row, start : start + tokens.shape[0]] = tokens
        self.mask[row, start : start + tokens.shape[0]] = mask

    def shared_prefix_row(self, row: int, tokens: np.ndarray, mask: np.ndarray, filled: int) -> int:
        """`shared_prefix` for one slot's prompt [S, K+1] against what that slot holds."""
        n = min(tokens.shape[0] - 1, filled)
        if n <= 0:
            return 0
        same = (self.tokens[row, :n] == tokens[:n]).all(axis=1) & (self.mask[row, :n] == mask[:n]).all(axis=1)
        return n if same.all() else int(np.argmin(same))
