"""Continuous batching: many requests on one model, each in its own slot.

    sched = Scheduler(model, tokenizer, codec, slots=8)      # model: a SlotModel
    job = sched.submit("Hello there.", speaker=0, options=GenerationOptions(seed=1))
    for chunk in sched.audio(job): play(chunk)               # steps the scheduler as needed
    sched.submit(...); while sched.step(): ...               # or drive it yourself (a server's worker)

Each `step()` is one model call: every running slot feeds its last frame and samples the next; a
joining request's prompt is fed in chunks of at most `prefill_rows` rows per step (its last chunk
samples its first frame), so a long voice context delays the running streams by one chunk's time
at most. A request that ends (all-zero frame, max_audio_ms, cancelled) frees its slot at once; the
next waiting request is admitted there on the following step. Long text runs sentence by sentence
in the same slot with the earlier sentences as context (the backend keeps the repeated prefix).

Every request has its own options and random stream: a seeded request gives the same codes alone
(`Generator.generate`) or in any batch; a request without a seed gets a fresh random one. Audio is
decoded per request by one batched streaming decoder (`codec.batch_streaming_decoder`, else one
streaming decoder per slot), in chunks of `chunk_frames` frames, as `Generator.stream_audio` does.
Where the decoder says `decode_every_step` (a call costs the same for any rows: the MLX one on a
GPU), each step's new frames are decoded at once, one frame per call, and the audio is held back
until a chunk is complete — one decoder call of one shape per step instead of one per chunk length.

No threads of its own: `submit`, `cancel` and the job queries are safe from other threads while one
thread calls `step()`; a job's `listener` (if set) is called from the stepping thread on new output.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np

from .generation import (
    Generation,
    GenerationStats,
    _sentence_seed,
    _sentences,
    _split_codes,
    fit_context,
    run_options,
)
from .options import GenerationOptions
from .prompt import PromptFrames, check_speaker, fit_prompt, max_prompt_frames, segment_frames, text_frames
from .protocols import AudioCodec, SamplingParams, SlotFeed, SlotModel, TextTokenizer
from .segment import Segment

__all__ = ["Scheduler", "Job", "QueueFullError", "JobFailed"]


class QueueFullError(RuntimeError):
    """More requests wait than the scheduler was told to hold (`max_waiting`)."""


class JobFailed(RuntimeError):
    """The model or codec failed while this job ran; `__cause__` is the original error."""


@dataclass(eq=False)
class Job:
    """One request in the scheduler. Output accumulates as the scheduler steps: `codes` (all frames
    so far), `take_audio()` (the chunks not yet taken). `done` once ended; `error` if it failed."""

    id: int
    text: str
    speaker: int
    options: GenerationOptions
    stats: GenerationStats
    listener: Callable[["Job"], None] | None = None
    state: str = "waiting"  # waiting → running → done | cancelled | failed
    error: BaseException | None = None
    frames: list[np.ndarray] = field(default_factory=list, repr=False)  # int64 [K] each
    # internals
    _sentences: list[str] = field(default_factory=list, repr=False)
    _targets: list[PromptFrames] = field(default_factory=list, repr=False)
    _ctx: list[PromptFrames] = field(default_factory=list, repr=False)
    _n_user: int = 0
    _sentence: int = -1
    _seed: int = 0
    _max_frames: int = 0
    _params: SamplingParams | None = field(default=None, repr=False)
    _slot: int | None = None
    _prompt: PromptFrames | None = field(default=None, repr=False)
    _fed: int = 0  # prompt rows already in the slot
    _last: np.ndarray | None = field(default=None, repr=False)  # frame to feed next, int64 [K]
    _sentence_frames: list[np.ndarray] = field(default_factory=list, repr=False)
    _pending: list[np.ndarray] = field(default_factory=list, repr=False)  # frames not yet decoded
    _decoded: list[np.ndarray] = field(default_factory=list, repr=False)  # audio of a chunk not yet complete
    _decoded_frames: int = 0
    _audio: deque = field(default_factory=deque, repr=False)
    _audio_all: list[np.ndarray] = field(default_factory=list, repr=False)
    _cancel: bool = False

    @property
    def done(self) -> bool:
        return self.state in ("done", "cancelled", "failed")

    @property
    def slot(self) -> int | None:
        return self._slot

    def cancel(self) -> None:
        """Stop this request: it leaves its slot before the next model step."""
        self._cancel = True

    def take_audio(self) -> list[np.ndarray]:
        """The float32 audio chunks decoded since the last call."""
        out = []
        while self._audio:
            out.append(self._audio.popleft())
        return out

    @property
    def codes(self) -> np.ndarray:
        """All frames so far, int64 [K, T]."""
        if not self.frames:
            return np.zeros((0, 0), np.int64)
        return np.stack(self.frames, axis=1)


class _PerRowDecoders:
    """BatchStreamingDecoder from one StreamingDecoder per row (codecs without a batched one)."""

    def __init__(self, codec: AudioCodec, rows: int):
        self.rows = rows
        self._codec = codec
        self._decoders = [None] * rows

    def reset_row(self, row: int) -> None:
        self._decoders[row] = self._codec.streaming_decoder()
        self._decoders[row].reset()

    def decode(self, rows: Sequence[int], codes: np.ndarray) -> np.ndarray:
        return np.stack([np.asarray(self._decoders[r].decode(c), np.float32) for r, c in zip(rows, codes)])


class Scheduler:
    """Continuous batching over a `SlotModel`; see the module docstring.

    slots: rows held at once; prefill_rows: prompt rows fed per step (all joining requests
    together); chunk_frames: frames per decoded audio chunk (None: no audio, codes only);
    first_chunk_frames: frames of each request's first chunk (default chunk_frames; 1 or 2 gives
    the earliest first audio);
    max_waiting: requests that may wait for a slot (None: unbounded; more raise QueueFullError).
    """

    def __init__(
        self,
        model: SlotModel,
        tokenizer: TextTokenizer,
        codec: AudioCodec | None = None,
        *,
        slots: int = 8,
        prefill_rows: int = 128,
        chunk_frames: int | None = 5,
        first_chunk_frames: int | None = None,
        max_waiting: int | None = None,
    ) -> None:
        for name in ("open_slots", "admit", "step", "slot_position"):
            if not hasattr(model, name):
                raise TypeError(f"{type(model).__name__} is not a csm_core.SlotModel: no {name}()")
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
            raise ValueError(f"slots must be an integer >= 1, got {slots!r}")
        if isinstance(prefill_rows, bool) or not isinstance(prefill_rows, int) or prefill_rows < 1:
            raise ValueError(f"prefill_rows must be an integer >= 1, got {prefill_rows!r}")
        if chunk_frames is not None and (not isinstance(chunk_frames, int) or chunk_frames < 1):
            raise ValueError(f"chunk_frames must be None or an integer >= 1, got {chunk_frames!r}")
        if first_chunk_frames is not None and (not isinstance(first_chunk_frames, int) or first_chunk_frames < 1):
            raise ValueError(f"first_chunk_frames must be None or an integer >= 1, got {first_chunk_frames!r}")
        if chunk_frames is not None and codec is None:
            raise ValueError("audio chunks need a codec: pass codec=... or chunk_frames=None")
        self.model = model
        self.tokenizer = tokenizer
        self.codec = codec
        self.config = model.config
        self.window = self.config.backbone.max_seq_len
        self.slots = slots
        self.prefill_rows = prefill_rows
        self.chunk_frames = chunk_frames
        self.first_chunk_frames = first_chunk_frames or chunk_frames
        self.max_waiting = max_waiting
        model.open_slots(slots)
        self._decoder = None
        if chunk_frames is not None:
            make = getattr(codec, "batch_streaming_decoder", None)
            self._decoder = make(slots) if make is not None else _PerRowDecoders(codec, slots)
        self._lock = threading.Lock()
        self._waiting: deque[Job] = deque()
        self._running: list[Job | None] = [None] * slots
        self._next_id = 0
        self.steps = 0

    # ---- submitting ----
    def submit(
        self,
        text: str,
        speaker: int = 0,
        context: Sequence[Segment] = (),
        options: GenerationOptions | None = None,
        *,
        listener: Callable[[Job], None] | None = None,
        **overrides,
    ) -> Job:
        """Queue a request; everything is checked here (text, speaker, context, options, fit in
        the window), so a bad request fails now and never disturbs the running ones."""
        options, parts = self._prepare(text, speaker, context, options, overrides)
        seed = options.seed if options.seed is not None else int(np.random.SeedSequence().generate_state(1, np.uint64)[0])
        with self._lock:
            if self.max_waiting is not None and len(self._waiting) >= self.max_waiting:
                raise QueueFullError(f"{len(self._waiting)} requests are already waiting (max_waiting={self.max_waiting})")
            job = Job(self._next_id, text, int(speaker), options, GenerationStats(started_at=time.perf_counter()), listener)
            self._next_id += 1
            job._sentences, job._targets, job._ctx, job._params = parts
            job._n_user, job._seed, job._max_frames = len(job._ctx), seed, options.max_frames
            self._waiting.append(job)
        return job

    def check(
        self, text: str, speaker: int = 0, context: Sequence[Segment] = (), options: GenerationOptions | None = None,
        **overrides,
    ) -> GenerationOptions:  # fmt: skip
        """Raise what `submit` would raise for this request, without queueing it; returns its options."""
        return self._prepare(text, speaker, context, options, overrides)[0]

    def _prepare(self, text, speaker, context, options, overrides):
        options = GenerationOptions.resolve(options, overrides)
        opts = run_options(options, self.window, self.codec)
        speaker = check_speaker(speaker)
        sentences = _sentences(text, options.split_sentences)
        targets = [text_frames(self.tokenizer, speaker, s, self.config) for s in sentences]
        for t in targets:
            fit_prompt([], t, max_prompt_frames(self.window, opts.max_frames))
        ctx = [
            segment_frames(s, self.tokenizer, self.codec, self.config, where=f"context[{i}]")
            for i, s in enumerate(context)
        ]
        return options, (sentences, targets, ctx, opts.params)

    # ---- state ----
    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return sum(j is not None for j in self._running)

    @property
    def busy(self) -> bool:
        return bool(self._waiting) or any(j is not None for j in self._running)

    # ---- the loop ----
    def step(self) -> bool:
        """One model step for every slot (plus prompt chunks of joining requests) and the audio
        decoded from it. Returns False when there was nothing to do."""
        self._drop_cancelled()
        self._admit()
        feeds, owners = self._feeds()
        if not feeds:
            return False
        try:
            codes = np.asarray(self.model.step(feeds))
        except Exception as e:
            for job in {id(j): j for j in owners}.values():
                self._fail(job, e)
            raise
        self.steps += 1
        sampled = [j for f, j in zip(feeds, owners) if f.params is not None]
        codes = codes.astype(np.int64)
        live = codes.any(axis=1).tolist()
        ended = [job for job, frame, alive in zip(sampled, codes, live) if self._take_frame(job, frame, alive)]
        self._decode_audio(ended)
        for job in ended:
            self._finish_sentence(job)
        for job in {id(j): j for j in owners}.values():
            if job.listener is not None:
                job.listener(job)
        return True

    def run(self) -> None:
        """Step until every submitted job has ended."""
        while self.step():
            pass

    def audio(self, job: Job) -> Iterator[np.ndarray]:
        """The job's audio chunks as they are decoded, stepping the scheduler (every job advances)."""
        while True:
            yield from job.take_audio()
            if job.done:
                if job.error is not None:
                    raise JobFailed(f"job {job.id} failed: {job.error}") from job.error
                return
            if not self.step() and not job.done:
                raise RuntimeError(f"job {job.id} is {job.state} but the scheduler has nothing to run")

    def result(self, job: Job) -> Generation:
        """Run until `job` ends; its codes, audio (joined chunks) and segments, as Generator.generate."""
        while not job.done:
            if not self.step():
                break
        if job.error is not None:
            raise JobFailed(f"job {job.id} failed: {job.error}") from job.error
        audio = None
        if self.chunk_frames is not None:
            audio = np.concatenate(job._audio_all) if job._audio_all else np.zeros(0, np.float32)
        codes = job.codes if job.frames else np.zeros((self.config.audio_num_codebooks, 0), np.int64)
        sr = None if self.codec is None else int(self.codec.sample_rate)
        return Generation(codes, audio, sr, _split_codes(codes, job.speaker, job.stats), job.stats)

    # ---- internals ----
    def _drop_cancelled(self) -> None:
        with self._lock:
            for job in [j for j in self._waiting if j._cancel]:
                self._waiting.remove(job)
                job.state = "cancelled"
                self._notify(job)
        for job in self._running:
            if job is not None and job._cancel:
                self._release(job, "cancelled")

    def _admit(self) -> None:
        for slot, job in enumerate(self._running):
            if job is None:
                with self._lock:
                    if not self._waiting:
                        return
                    job = self._waiting.popleft()
                job._slot = slot
                job.state = "running"
                self._running[slot] = job
                if self._decoder is not None:
                    self._decoder.reset_row(slot)
                self._start_sentence(job)

    def _start_sentence(self, job: Job) -> None:
        """Admit the job's next sentence into its slot: prompt = kept context + the sentence."""
        job._sentence += 1
        j = job._sentence
        prompt, dropped = fit_context(self.window, job._ctx, job._targets[j], job.options.max_frames, job._n_user)
        st = job.stats
        st.dropped_context = max(st.dropped_context, dropped)
        st.sentences.append(job._sentences[j])
        st.prompt_frames.append(len(prompt))
        st.frames.append(0)
        job._prompt = prompt
        job._fed = int(self.model.admit(job._slot, _sentence_seed(job._seed, j), prompt.tokens, prompt.mask))
        st.reused_prompt_frames.append(job._fed)
        job._last = None
        job._sentence_frames = []

    def _feeds(self) -> tuple[list[SlotFeed], list[Job]]:
        K = self.config.audio_num_codebooks
        running = [j for j in self._running if j is not None and j._last is not None]
        feeds, owners = [], []
        if running:  # feed each its last frame and sample the next: one array, a view per row
            tokens = np.zeros((len(running), 1, K + 1), np.int64)
            tokens[:, 0, :K] = np.stack([j._last for j in running])
            mask = np.zeros((1, K + 1), bool)
            mask[0, :K] = True
            feeds = [SlotFeed(j._slot, tokens[i], mask, j._params) for i, j in enumerate(running)]
            owners = running
        budget = self.prefill_rows
        for job in sorted((j for j in self._running if j is not None and j._last is None), key=lambda j: j.id):
            if budget <= 0:
                break
            left = len(job._prompt) - job._fed
            n = min(left, budget)
            rows = slice(job._fed, job._fed + n)
            last = n == left
            feeds.append(SlotFeed(job._slot, job._prompt.tokens[rows], job._prompt.mask[rows], job._params if last else None))
            owners.append(job)
            job._fed += n
            budget -= n
        return feeds, owners

    def _take_frame(self, job: Job, frame: np.ndarray, live: bool) -> bool:
        """Record a sampled frame (`live`: not all zero); True when the job's sentence has ended."""
        st = job.stats
        if not live:  # the all-zero frame ends the sentence; never fed back nor returned
            st.stop_reasons.append("eos")
            return True
        job.frames.append(frame)
        job._sentence_frames.append(frame)
        job._pending.append(frame)
        st.frames[-1] += 1
        if st.time_to_first_frame_s is None:
            st.time_to_first_frame_s = st._mark()
        job._last = frame
        if st.frames[-1] >= job._max_frames:
            st.stop_reasons.append("max_length")
            return True
        return False

    def _finish_sentence(self, job: Job) -> None:
        if job._sentence + 1 < len(job._sentences):  # carry this sentence as context for the next
            codes = np.stack(job._sentence_frames, axis=1) if job._sentence_frames else None
            if codes is not None:
                carried = Segment(job.speaker, job._sentences[job._sentence], codes=codes)
                job._ctx.append(segment_frames(carried, self.tokenizer, None, self.config))
            self._start_sentence(job)
        else:
            self._release(job, "done")

    def _decode_audio(self, ended: list[Job]) -> None:
        """Decode every job with a full chunk pending (and the rest of those whose last sentence
        ended), batched by chunk length: one decoder call per distinct length. With a
        `decode_every_step` decoder, every pending frame now (one call), delivered by chunks."""
        if self._decoder is None:
            for job in self._running:
                if job is not None:
                    job._pending.clear()
            return
        finishing = {id(j) for j in ended if j._sentence + 1 >= len(j._sentences)}
        every_step = getattr(self._decoder, "decode_every_step", False)
        groups: dict[int, list[Job]] = {}
        for job in self._running:
            if job is None or not job._pending:
                continue
            if every_step or len(job._pending) + job._decoded_frames >= self._chunk_wanted(job) or id(job) in finishing:
                groups.setdefault(len(job._pending), []).append(job)
        for n, jobs in groups.items():
            codes = np.stack([np.stack(j._pending, axis=1) for j in jobs])  # [n_jobs, K, n]
            try:
                audio = np.asarray(self._decoder.decode([j._slot for j in jobs], codes), np.float32)
            except Exception as e:
                for j in jobs:
                    self._fail(j, e)
                raise
            for j, chunk in zip(jobs, audio):
                j._decoded.append(chunk)
                j._decoded_frames += len(j._pending)
                j._pending.clear()
        for job in self._running:
            if job is not None and job._decoded and (job._decoded_frames >= self._chunk_wanted(job) or id(job) in finishing):
                chunk = np.concatenate(job._decoded) if len(job._decoded) > 1 else job._decoded[0]
                job._decoded, job._decoded_frames = [], 0
                job._audio.append(chunk)
                job._audio_all.append(chunk)
                if job.stats.time_to_first_audio_s is None:
                    job.stats.time_to_first_audio_s = job.stats._mark()

    def _chunk_wanted(self, job: Job) -> int:
        return self.chunk_frames if job._audio_all else self.first_chunk_frames

    def _release(self, job: Job, state: str) -> None:
        if job._slot is not None and self._running[job._slot] is job:
            self._running[job._slot] = None
        job.state = state
        job.stats._mark()
        self._notify(job)

    def _fail(self, job: Job, error: BaseException) -> None:
        job.error = error
        self._release(job, "failed")

    @staticmethod
    def _notify(job: Job) -> None:
        if job.listener is not None:
            job.listener(job)
