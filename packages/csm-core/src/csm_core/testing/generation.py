"""Small deterministic stand-ins for the generation seams (tests only, numpy only).

- `FakeFrameModel`: a `FrameModel` whose codes depend on every frame fed so far (per row, padding
  ignored), drawn with `csm_core.sampling.sample` from pseudo-random logits, so greedy, seeds,
  feed-back, padding and stopping are all observable. Row b ends (all-zero frame) after
  `eos_after[b]` frames. It refuses to run past the position window, like a real KV cache.
- `FakeTokenizer`: UTF-8 bytes as ids, with Llama-3's bos/eos ids.
- `FakeCodec`: codes ↔ audio with a one-frame memory, so a streaming decoder must carry state.
- `oracle_request(oracle)`: an oracle fixture's prompt as Generator input (a `TableTokenizer` that
  returns the fixture's text ids, context `Segment`s with codes, the target text), so a backend's
  `Generator` run can be compared with the oracle's `greedy_frames`.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..config import CSMConfig
from ..protocols import SamplingParams
from ..sampling import sample
from ..segment import Segment

__all__ = ["FakeFrameModel", "FakeTokenizer", "TableTokenizer", "FakeCodec", "oracle_request"]

_MOD = (1 << 61) - 1  # Mersenne prime for the rolling hash of fed frames


class FakeFrameModel:
    """A stand-in backend. `calls` holds (tokens, mask) of every generate_frame since reset,
    `params` the SamplingParams of the last call, `resets` every (batch_size, seed) reset with.

    undecodable_bias: add +30 to the logits of codes >= 2048 so that only `mask_undecodable`
    keeps them out, which makes the masking observable.
    """

    name = "fake"

    def __init__(
        self, config: CSMConfig, eos_after: int | Sequence[int] | None = None, undecodable_bias: bool = True
    ) -> None:
        self.config = config
        self.eos_after = eos_after
        self.undecodable_bias = undecodable_bias
        self.calls: list[tuple[np.ndarray, np.ndarray]] = []
        self.params: SamplingParams | None = None
        self.resets: list[tuple[int, int | None]] = []
        self.reset()

    def reset(self, batch_size: int = 1, seed: int | None = None) -> None:
        self.batch_size = batch_size
        self._position = 0
        self._state = [0] * batch_size  # rolling hash of each row's non-padding frames
        self._generated = np.zeros(batch_size, np.int64)
        self._rng = np.random.default_rng(seed)
        self.calls = []
        self.resets.append((batch_size, seed))

    @property
    def position(self) -> int:
        return self._position

    def _eos_after(self, row: int) -> float:
        if self.eos_after is None:
            return math.inf
        if isinstance(self.eos_after, int):
            return self.eos_after
        return self.eos_after[row]

    def generate_frame(self, tokens: np.ndarray, mask: np.ndarray, params: SamplingParams) -> np.ndarray:
        K, V = self.config.audio_num_codebooks, self.config.audio_vocab_size
        B, S, width = tokens.shape
        if (B, width) != (self.batch_size, K + 1) or mask.shape != tokens.shape or mask.dtype != bool:
            raise ValueError(f"bad input: tokens {tokens.shape}, mask {mask.dtype} {mask.shape}, batch {self.batch_size}")
        if self._position + S > self.config.backbone.max_seq_len:
            raise RuntimeError(f"position {self._position + S} exceeds the window {self.config.backbone.max_seq_len}")
        self.calls.append((tokens.copy(), mask.copy()))
        self.params = params
        out = np.zeros((B, K), np.int32)
        for b in range(B):
            for s in range(S):
                if mask[b, s].any():  # padding rows leave the state alone
                    frame_hash = int(np.sum((tokens[b, s] * mask[b, s] + 1) * np.arange(1, K + 2))) % _MOD
                    self._state[b] = (self._state[b] * 1_000_003 + frame_hash) % _MOD
            logits = np.random.default_rng(self._state[b]).standard_normal((K, V), dtype=np.float32)
            logits *= 3
            if self.undecodable_bias:
                logits[:, params.codec_size :] += 30
            codes = sample(logits, params, self._rng)  # [K]: one "row" per codebook
            if self._generated[b] >= self._eos_after(b):
                codes[:] = 0
            out[b] = codes
        self._generated += 1
        self._position += S
        return out


class FakeTokenizer:
    """UTF-8 bytes as ids (0..255) plus Llama-3's bos 128000 / eos 128001."""

    bos_id = 128_000
    eos_id = 128_001
    vocab_size = 128_256

    def encode(self, text: str, *, bos: bool = False, eos: bool = False, allow_special: bool = False) -> list[int]:
        return [self.bos_id] * bos + list(text.encode("utf-8")) + [self.eos_id] * eos

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def token_to_id(self, token: str) -> int:
        return {"<|begin_of_text|>": self.bos_id, "<|end_of_text|>": self.eos_id}[token]


class TableTokenizer(FakeTokenizer):
    """Fixed ids (bos/eos included) for known prompt strings such as "[0]text"; bytes otherwise."""

    def __init__(self, table: Mapping[str, Sequence[int]]) -> None:
        self.table = {k: [int(i) for i in v] for k, v in table.items()}

    def encode(self, text: str, *, bos: bool = False, eos: bool = False, allow_special: bool = False) -> list[int]:
        if text in self.table:
            return list(self.table[text])
        return super().encode(text, bos=bos, eos=eos)


def oracle_request(oracle: Mapping[str, Any]) -> tuple[TableTokenizer, list[Segment], str]:
    """(tokenizer, context, target) that make `Generator` rebuild the oracle's prompt exactly.

    The oracle prompt (`csm_core.testing.csm.make_prompt`) alternates runs of text frames and audio
    frames (codes + EOS frame) and ends with the target's text. Context segment i is spoken by
    speaker i % 2 with text "s{i}"; the target by speaker 0 with text "target".
    """
    K = oracle["config"].audio_num_codebooks
    tokens, mask = oracle["tokens"][0], oracle["mask"][0]  # [S, K+1]
    is_text = mask[:, K]
    runs = np.split(np.arange(len(tokens)), np.flatnonzero(np.diff(is_text.astype(int))) + 1)
    if not is_text[runs[-1][0]] or len(runs) % 2 != 1:
        raise ValueError("oracle prompt is not (text, audio)* then target text")
    table: dict[str, Sequence[int]] = {"[0]target": tokens[runs[-1], K]}
    context = []
    for i, (text_run, audio_run) in enumerate(zip(runs[0:-1:2], runs[1:-1:2])):
        table[f"[{i % 2}]s{i}"] = tokens[text_run, K]
        context.append(Segment(i % 2, f"s{i}", codes=tokens[audio_run[:-1], :K].T))  # drop the EOS frame
    return TableTokenizer(table), context, "target"


class _FakeStreamingDecoder:
    def __init__(self, codec: "FakeCodec") -> None:
        self.codec = codec
        self.reset()

    def reset(self) -> None:
        self._last = 0

    def decode(self, codes: np.ndarray) -> np.ndarray:
        audio = self.codec._decode(codes, self._last)
        if codes.shape[1]:
            self._last = int(codes[0, -1])
        return audio


class FakeCodec:
    """Frame t decodes to `frame_size` samples of (codes[0, t] + codes[0, t-1]) / 4096."""

    sample_rate = 24_000
    frame_size = 1920
    num_codebooks = 32
    codebook_size = 2048

    def encode(self, audio: np.ndarray, num_codebooks: int | None = None) -> np.ndarray:
        K = num_codebooks or self.num_codebooks
        T = -(-len(audio) // self.frame_size)
        level = [int(abs(audio[t * self.frame_size : (t + 1) * self.frame_size]).mean() * 1000) for t in range(T)]
        t, k = np.meshgrid(np.arange(T), np.arange(K))
        return (np.asarray(level, np.int64)[t] + 7 * k + t) % (self.codebook_size - 1) + 1  # [K, T]

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return self._decode(codes, 0)

    def _decode(self, codes: np.ndarray, previous: int) -> np.ndarray:
        c0 = np.asarray(codes[0], np.float32)
        prev = np.concatenate([[previous], c0[:-1]]).astype(np.float32)
        return np.repeat((c0 + prev) / 4096, self.frame_size).astype(np.float32)

    def streaming_decoder(self) -> _FakeStreamingDecoder:
        return _FakeStreamingDecoder(self)
