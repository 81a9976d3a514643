"""The CSM generation loop: prompt → frames (→ audio), on any backend that implements `FrameModel`.

Usage::

    gen = Generator(model, tokenizer, codec)          # FrameModel, TextTokenizer, AudioCodec | None
    out = gen.generate("Hello there.", speaker=0, context=[Segment(1, "Hi.", audio=clip)])
    out.codes        # int64 [32, T] Mimi codes, 80 ms a frame
    out.audio        # float32 [T * 1920] at out.sample_rate (None without a codec)
    out.segments     # one Segment(speaker, sentence, codes=...) per sentence: reuse as context
    out.stats        # GenerationStats: prompt sizes, frames, stop reasons, time to first frame
    for frame in gen.stream_frames("Hello there."): ...            # int64 [32] per 80 ms frame
    for chunk in (s := gen.stream_audio("Hi.", chunk_frames=5)): play(chunk)   # s.stats as it goes
    outs = gen.generate_batch([Request("Hi.", 0), Request("Bye.", 1)])        # one Generation each
    gen.check_requests(requests)      # raise what generate_batch would (err.request_index), no generating
    for i, chunk in gen.stream_batch_audio(requests): ...    # chunk None: request i has ended

Options: every method takes a `GenerationOptions` (csm_core.options: max_audio_ms, temperature,
topk, seed, split_sentences, mask_undecodable; defaults as the official generator) and/or the same
names as keyword overrides, e.g. `gen.generate("Hi.", temperature=0, seed=1)`; unknown names and bad
values raise `OptionError` naming the field.

Semantics follow the official Sesame generator (spec/csm.md §2):
- the prompt is built by `csm_core.prompt` (context segments' text and audio frames, then the target);
- per frame the backend samples 32 codes (sampling runs on the backend's device); generation stops
  at the first frame whose 32 codes are ALL zero (that frame is never fed back nor returned) or
  after int(max_audio_ms / 80) frames. Hugging Face's `generate` checks only codebooks 0..30 and
  returns the EOS frame; we follow the official all-32 rule;
- the prompt must satisfy prompt_len < 2048 - max_frames. When it does not, whole context segments
  are dropped, oldest first, with a log warning; a target that cannot fit alone raises
  `ContextOverflowError` with the numbers.

Deviations from the official code, on purpose:
- codes 2048..2050 exist in the model heads but Mimi cannot decode them; `mask_undecodable`
  (`SamplingParams`) gives them zero probability. The official code never masks them.
- long text is split into sentences (`csm_core.text_split`) generated in order, each with the
  previous sentences (text + generated codes) as context for a consistent voice; the codes are
  joined. `split_sentences=False` generates the text as one prompt, as the official code does.
  When the window fills, previously generated sentences are dropped (oldest first) before the
  caller's context, so a reference voice clip is kept as long as possible.
- batches (`generate_batch`) left-pad prompts; a finished row is fed padding (all-False mask rows)
  while the others continue. One seed drives the whole batch, so a row's sampled codes differ from
  the same request generated alone (greedy codes do not).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Generic, Iterator, Sequence, TypeVar

import numpy as np

from .prompt import (
    ContextOverflowError,
    PromptFrames,
    check_speaker,
    fit_prompt,
    left_pad,
    max_prompt_frames,
    segment_frames,
    text_frames,
)
from .options import DEFAULT_MAX_AUDIO_MS, FRAME_MS, GenerationOptions
from .protocols import AudioCodec, FrameModel, SamplingParams, TextTokenizer
from .segment import Segment
from .text_split import has_speakable_text, split_sentences

__all__ = [
    "FRAME_MS",
    "DEFAULT_MAX_AUDIO_MS",
    "GenerationStats",
    "Generation",
    "Request",
    "Stream",
    "Generator",
    "frame_loop",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")
# a batch row is one prompt: split_sentences has no meaning there
BATCH_OPTIONS = tuple(n for n in GenerationOptions.field_names() if n != "split_sentences")


@dataclass
class GenerationStats:
    """What a run did and how fast; filled in while it runs (streams update it as they go).
    Times are seconds since the run started (its first `next()` for a stream)."""

    sentences: list[str] = field(default_factory=list)  # the texts generated, in order
    prompt_frames: list[int] = field(default_factory=list)  # prompt length per sentence (batch: per row)
    # prompt rows per sentence the backend found in its cache and did not recompute (0 if it cannot)
    reused_prompt_frames: list[int] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)  # frames generated per sentence (batch: per row)
    stop_reasons: list[str] = field(default_factory=list)  # "eos" or "max_length", per sentence/row
    dropped_context: int = 0  # caller's context segments dropped to fit the window (most at once)
    time_to_first_frame_s: float | None = None
    time_to_first_audio_s: float | None = None
    elapsed_s: float = 0.0
    started_at: float = field(default=0.0, repr=False)  # time.perf_counter() at start

    @property
    def total_frames(self) -> int:
        return sum(self.frames)

    @property
    def audio_seconds(self) -> float:
        return self.total_frames * FRAME_MS / 1000

    @property
    def real_time_factor(self) -> float:
        """Generation time / audio time (< 1 is faster than real time)."""
        return self.elapsed_s / self.audio_seconds if self.total_frames else math.inf

    def _mark(self) -> float:
        self.elapsed_s = time.perf_counter() - self.started_at
        return self.elapsed_s


@dataclass
class Generation:
    """One utterance: codes int64 [K, T]; audio float32 [T * frame_size] when a codec was given."""

    codes: np.ndarray
    audio: np.ndarray | None
    sample_rate: int | None
    segments: list[Segment]  # one per sentence, with its codes: feed back as context
    stats: GenerationStats


@dataclass(frozen=True)
class Request:
    """One utterance of a batch."""

    text: str
    speaker: int = 0
    context: Sequence[Segment] = ()


class Stream(Generic[T]):
    """An iterator over frames or audio chunks with `stats` that fill in as it runs."""

    def __init__(self, items: Iterator[T], stats: GenerationStats) -> None:
        self._items = items
        self.stats = stats

    def __iter__(self) -> "Stream[T]":
        return self

    def __next__(self) -> T:
        return next(self._items)


@dataclass(frozen=True)
class _Options:
    max_frames: int
    params: SamplingParams
    seed: int | None


def frame_loop(
    model: FrameModel,
    tokens: np.ndarray,
    mask: np.ndarray,
    params: SamplingParams,
    max_frames: int,
    seed: int | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The official loop for a (left-padded) batch prompt tokens/mask [B, S, K+1].

    Yields (frame int32 [B, K], active bool [B]) per step; a row is active until its first all-zero
    frame, which is neither yielded as active nor fed back. Finished rows are fed padding (all-False
    mask) while others continue. Ends when every row has finished or after `max_frames` frames.
    """
    B, _, width = tokens.shape
    K = width - 1
    model.reset(batch_size=B, seed=seed)
    active = np.ones(B, bool)
    feed_tokens, feed_mask = tokens, mask
    for _ in range(max_frames):
        frame = np.asarray(model.generate_frame(feed_tokens, feed_mask, params))
        if frame.shape != (B, K):
            raise RuntimeError(f"backend {model.name!r} returned a frame of shape {frame.shape}, expected {(B, K)}")
        active &= np.any(frame != 0, axis=1)  # the all-zero frame ends a row
        if not active.any():
            return
        yield frame, active.copy()
        feed_tokens = np.zeros((B, 1, width), np.int64)  # [B, 1, K+1]: codes, text column 0
        feed_tokens[active, 0, :K] = frame[active]
        feed_mask = np.zeros((B, 1, width), bool)
        feed_mask[active, 0, :K] = True


class Generator:
    """Text (+ context) → Mimi codes (→ audio) with one backend. See the module docstring."""

    def __init__(self, model: FrameModel, tokenizer: TextTokenizer, codec: AudioCodec | None = None) -> None:
        # Checked by name, not isinstance(): on Python < 3.12 that evaluates properties such as
        # `position`, which a backend may only define after reset().
        for obj, protocol, members in (
            (model, "FrameModel", ("config", "reset", "generate_frame")),
            (tokenizer, "TextTokenizer", ("encode",)),
        ):
            missing = [m for m in members if not hasattr(type(obj), m) and not hasattr(obj, m)]
            if missing:
                raise TypeError(f"{type(obj).__name__} does not implement csm_core.{protocol}: no {missing}")
        self.model = model
        self.tokenizer = tokenizer
        self.codec = codec
        self.config = model.config
        self.window = self.config.backbone.max_seq_len
        K = self.config.audio_num_codebooks
        if codec is not None and codec.num_codebooks < K:
            raise ValueError(f"codec has {codec.num_codebooks} codebooks, the model needs {K}")

    # ---- public API ----
    def generate(
        self, text: str, speaker: int = 0, context: Sequence[Segment] = (),
        options: GenerationOptions | None = None, **overrides,
    ) -> Generation:  # fmt: skip
        """Generate `text` spoken by `speaker` after `context`; codes (and audio with a codec)."""
        stream = self.stream_frames(text, speaker, context, options, **overrides)
        codes = self._stack(list(stream))
        audio = self._decode(codes)
        stream.stats._mark()
        segments = _split_codes(codes, speaker, stream.stats)
        return Generation(codes, audio, self._sample_rate(), segments, stream.stats)

    def stream_frames(
        self, text: str, speaker: int = 0, context: Sequence[Segment] = (),
        options: GenerationOptions | None = None, **overrides,
    ) -> Stream[np.ndarray]:  # fmt: skip
        """Frames int64 [K] as they are generated. Input is checked here, before iteration starts."""
        options = GenerationOptions.resolve(options, overrides)
        opts = self._options(options)
        speaker = check_speaker(speaker)
        sentences = _sentences(text, options.split_sentences)
        targets = [text_frames(self.tokenizer, speaker, s, self.config) for s in sentences]
        for target in targets:  # a target too long for the window fails now, not mid-stream
            fit_prompt([], target, max_prompt_frames(self.window, opts.max_frames))
        ctx = [
            segment_frames(s, self.tokenizer, self.codec, self.config, where=f"context[{i}]")
            for i, s in enumerate(context)
        ]
        stats = GenerationStats()
        return Stream(self._run(sentences, targets, speaker, ctx, opts, stats), stats)

    def stream_audio(
        self, text: str, speaker: int = 0, context: Sequence[Segment] = (),
        options: GenerationOptions | None = None, *, chunk_frames: int = 5, **overrides,
    ) -> Stream[np.ndarray]:  # fmt: skip
        """Audio float32 chunks of `chunk_frames` frames (the last may be shorter), decoded by the
        codec's streaming decoder while generation goes on. Options as `stream_frames`."""
        self._check_streaming("stream_audio", chunk_frames)
        frames = self.stream_frames(text, speaker, context, options, **overrides)
        return Stream(self._audio_chunks(frames, chunk_frames), frames.stats)

    def generate_batch(
        self, requests: Sequence[Request | str], options: GenerationOptions | None = None, **overrides
    ) -> list[Generation]:
        """Several independent utterances in one batch (B = len(requests)); each text is one
        prompt (no sentence splitting). Returns one Generation per request, in order."""
        opts = self._options(GenerationOptions.resolve(options, overrides, BATCH_OPTIONS))
        started = time.perf_counter()
        requests, prompts, stats = self._batch_prompts(requests, opts.max_frames, started)
        tokens, mask = left_pad(prompts)
        rows: list[list[np.ndarray]] = [[] for _ in requests]
        first_frame_s = None
        for frame, active in frame_loop(self.model, tokens, mask, opts.params, opts.max_frames, opts.seed):
            if first_frame_s is None:
                first_frame_s = time.perf_counter() - started
            for b in np.flatnonzero(active):
                rows[b].append(frame[b].astype(np.int64))
        out = []
        for r, st, frames in zip(requests, stats, rows):
            codes = self._stack(frames)
            st.frames.append(codes.shape[1])
            st.stop_reasons.append("max_length" if codes.shape[1] == opts.max_frames else "eos")
            st.time_to_first_frame_s = first_frame_s
            audio = self._decode(codes)
            st._mark()
            segments = [Segment(r.speaker, st.sentences[0], codes=codes)]
            out.append(Generation(codes, audio, self._sample_rate(), segments, st))
        return out

    def stream_batch_audio(
        self, requests: Sequence[Request | str], options: GenerationOptions | None = None, *,
        chunk_frames: int = 5, **overrides,
    ) -> Iterator[tuple[int, np.ndarray | None]]:  # fmt: skip
        """Several utterances generated together (as `generate_batch`), their audio streamed:
        (request index, float32 chunk of `chunk_frames` frames, a row's last may be shorter) as
        the frames come, then (index, None) once that request has ended. Input is checked here,
        before iteration starts; errors carry `request_index`."""
        self._check_streaming("stream_batch_audio", chunk_frames)
        opts = self._options(GenerationOptions.resolve(options, overrides, BATCH_OPTIONS))
        requests, prompts, stats = self._batch_prompts(requests, opts.max_frames, time.perf_counter())
        return self._batch_chunks(prompts, stats, opts, chunk_frames)

    def _batch_chunks(self, prompts, stats, opts: _Options, chunk_frames: int) -> Iterator[tuple[int, np.ndarray | None]]:
        tokens, mask = left_pad(prompts)
        decoders = [self.codec.streaming_decoder() for _ in prompts]
        for d in decoders:
            d.reset()
        buffers: list[list[np.ndarray]] = [[] for _ in prompts]
        live = np.ones(len(prompts), bool)

        def end(b: int):
            if buffers[b]:
                yield b, self._stream_decode(decoders[b], buffers[b], stats[b])
            yield b, None

        for frame, active in frame_loop(self.model, tokens, mask, opts.params, opts.max_frames, opts.seed):
            for b in np.flatnonzero(live & ~active).tolist():  # rows that ended on this step
                yield from end(b)
            live = active
            for b in np.flatnonzero(active).tolist():
                buffers[b].append(frame[b].astype(np.int64))
                if len(buffers[b]) == chunk_frames:
                    yield b, self._stream_decode(decoders[b], buffers[b], stats[b])
        for b in np.flatnonzero(live).tolist():
            yield from end(b)

    def check_requests(
        self, requests: Sequence[Request | str], options: GenerationOptions | None = None, **overrides
    ) -> None:
        """Raise what `generate_batch` would raise for these requests (bad text or speaker, context
        without audio, a prompt that cannot fit), without generating. The error carries
        `request_index`, the index of the request at fault."""
        options = GenerationOptions.resolve(options, overrides, BATCH_OPTIONS)
        self._batch_prompts(requests, self._options(options).max_frames, 0.0)

    # ---- internals ----
    def _check_streaming(self, method: str, chunk_frames: int) -> None:
        if self.codec is None:
            raise ValueError(f"{method} needs a codec; this Generator has none")
        if isinstance(chunk_frames, bool) or not isinstance(chunk_frames, int) or chunk_frames < 1:
            raise ValueError(f"chunk_frames must be an integer >= 1, got {chunk_frames!r}")

    def _batch_prompts(
        self, requests, max_frames: int, started: float
    ) -> tuple[list[Request], list[PromptFrames], list[GenerationStats]]:
        """Each request's prompt (fitted to the window) and its stats; errors name the request."""
        requests = [Request(r) if isinstance(r, str) else r for r in requests]
        if not requests:
            raise ValueError("generate_batch needs at least one request")
        prompts, stats = [], []
        for b, r in enumerate(requests):
            try:
                if not isinstance(r, Request):
                    raise TypeError(f"requests[{b}] must be a Request or str, got {type(r).__name__}")
                speaker = check_speaker(r.speaker, f"requests[{b}].speaker")
                (text,) = _sentences(r.text, split=False, where=f"requests[{b}].text")
                ctx = [
                    segment_frames(s, self.tokenizer, self.codec, self.config, where=f"requests[{b}].context[{i}]")
                    for i, s in enumerate(r.context)
                ]
                target = text_frames(self.tokenizer, speaker, text, self.config)
                st = GenerationStats(sentences=[text], started_at=started)
                try:
                    prompt, st.dropped_context = self._fit(ctx, target, max_frames, n_user=len(ctx))
                except ContextOverflowError as e:
                    raise ContextOverflowError(f"requests[{b}]: {e}") from None
            except (TypeError, ValueError) as e:
                e.request_index = b
                raise
            st.prompt_frames.append(len(prompt))
            prompts.append(prompt)
            stats.append(st)
        return requests, prompts, stats

    def _options(self, options: GenerationOptions) -> _Options:
        return run_options(options, self.window, self.codec)

    def _fit(self, ctx: list[PromptFrames], target: PromptFrames, max_frames: int, n_user: int):
        return fit_context(self.window, ctx, target, max_frames, n_user)

    def _run(
        self,
        sentences: list[str],
        targets: list[PromptFrames],
        speaker: int,
        ctx: list[PromptFrames],
        opts: _Options,
        stats: GenerationStats,
    ) -> Iterator[np.ndarray]:
        stats.started_at = time.perf_counter()
        n_user = len(ctx)
        for j, (sentence, target) in enumerate(zip(sentences, targets)):
            prompt, dropped = self._fit(ctx, target, opts.max_frames, n_user)
            stats.dropped_context = max(stats.dropped_context, dropped)
            stats.sentences.append(sentence)
            stats.prompt_frames.append(len(prompt))
            stats.frames.append(0)
            codes: list[np.ndarray] = []
            for frame, _ in frame_loop(
                self.model, prompt.tokens[None], prompt.mask[None], opts.params, opts.max_frames,
                _sentence_seed(opts.seed, j),
            ):  # fmt: skip
                codes.append(frame[0].astype(np.int64))
                stats.frames[-1] += 1
                if stats.time_to_first_frame_s is None:
                    stats.time_to_first_frame_s = stats._mark()
                yield codes[-1]
            stats.stop_reasons.append("max_length" if len(codes) == opts.max_frames else "eos")
            stats.reused_prompt_frames.append(int(getattr(self.model, "reused_positions", 0)))
            stats._mark()
            if j + 1 < len(sentences):  # carry this sentence as context for the next
                carried = Segment(speaker, sentence, codes=self._stack(codes))
                ctx.append(segment_frames(carried, self.tokenizer, None, self.config))

    def _audio_chunks(self, frames: Stream[np.ndarray], chunk_frames: int) -> Iterator[np.ndarray]:
        decoder = self.codec.streaming_decoder()
        decoder.reset()
        buffer: list[np.ndarray] = []
        stats = frames.stats
        for frame in frames:
            buffer.append(frame)
            if len(buffer) == chunk_frames:
                yield self._stream_decode(decoder, buffer, stats)
        if buffer:
            yield self._stream_decode(decoder, buffer, stats)

    def _stream_decode(self, decoder, buffer: list[np.ndarray], stats: GenerationStats) -> np.ndarray:
        chunk = np.asarray(decoder.decode(self._stack(buffer)), dtype=np.float32)
        buffer.clear()
        if stats.time_to_first_audio_s is None:
            stats.time_to_first_audio_s = stats._mark()
        return chunk

    def _stack(self, frames: list[np.ndarray]) -> np.ndarray:
        """Frames [K] each → codes int64 [K, T]."""
        if not frames:
            return np.zeros((self.config.audio_num_codebooks, 0), np.int64)
        return np.stack(frames, axis=1).astype(np.int64)

    def _decode(self, codes: np.ndarray) -> np.ndarray | None:
        if self.codec is None:
            return None
        if codes.shape[1] == 0:
            return np.zeros(0, np.float32)
        return np.asarray(self.codec.decode(codes), dtype=np.float32)

    def _sample_rate(self) -> int | None:
        return None if self.codec is None else int(self.codec.sample_rate)


def run_options(options: GenerationOptions, window: int, codec: AudioCodec | None) -> _Options:
    """A run's frame limit and sampling parameters; the limit must leave room for a prompt."""
    max_frames = options.max_frames
    if max_prompt_frames(window, max_frames) < 1:
        raise ContextOverflowError(
            f"max_audio_ms={options.max_audio_ms:g} asks for {max_frames} frames, but the {window}-position "
            f"window must also hold the prompt: use at most {(window - 3) * FRAME_MS} ms"
        )
    codec_size = codec.codebook_size if codec is not None else 2048
    return _Options(max_frames, options.sampling(codec_size), options.seed)


def fit_context(
    window: int, ctx: list[PromptFrames], target: PromptFrames, max_frames: int, n_user: int
) -> tuple[PromptFrames, int]:
    """Prompt = kept context + target; returns it and how many caller segments were dropped.
    Generated sentences (ctx[n_user:]) are dropped before the caller's context."""
    limit = max_prompt_frames(window, max_frames)
    order = list(range(n_user, len(ctx))) + list(range(n_user))
    keep = fit_prompt(ctx, target, limit, order)
    dropped_user = sum(1 for i in range(n_user) if i not in keep)
    dropped_own = len(ctx) - len(keep) - dropped_user
    if dropped_user:
        logger.warning(
            "context too long for the %d-position window with %d audio frames requested: "
            "dropped the %d oldest of %d context segment(s)", window, max_frames, dropped_user, n_user,
        )  # fmt: skip
    if dropped_own:
        logger.info("dropped %d earlier generated sentence(s) from the context to fit the window", dropped_own)
    return PromptFrames.concat([ctx[i] for i in keep] + [target]), dropped_user


def _sentences(text: str, split: bool, where: str = "text") -> list[str]:
    """The texts to generate, in order; clear errors for non-text or nothing to speak."""
    if not isinstance(text, str):
        raise TypeError(f"{where} must be a str, got {type(text).__name__}")
    if not has_speakable_text(text):
        raise ValueError(f"{where} has nothing to speak (no letter or digit): {text[:60]!r}")
    return split_sentences(text) if split else [text.strip()]


def _sentence_seed(seed: int | None, index: int) -> int | None:
    """Sentence 0 uses `seed` itself; later sentences get independent seeds derived from it."""
    if seed is None or index == 0:
        return seed
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def _split_codes(codes: np.ndarray, speaker: int, stats: GenerationStats) -> list[Segment]:
    bounds = np.cumsum([0] + stats.frames)
    return [
        Segment(speaker, s, codes=codes[:, a:b]) for s, a, b in zip(stats.sentences, bounds[:-1], bounds[1:])
    ]
