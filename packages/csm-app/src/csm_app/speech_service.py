"""The model behind `csm serve`, without HTTP: one worker thread owns the model and steps the
continuous-batching scheduler (csm_core.scheduler) while there is work, waking when a request
arrives. Each request is a `Stream` whose audio chunks, watermarked at their own sample positions,
reach an asyncio consumer as they are decoded.

    service = SpeechService(tts, slots=4, max_waiting=16).start()
    stream = service.open("Hello.", service.voice("0"), service.options({"seed": 1}))
    async for chunk in stream: ...       # float32, 24 kHz, watermarked
    stream.cancel()                      # the listener left: its slot is free before the next step

Errors the caller can act on: `OptionError` (csm_core.options; `.field` names the option),
`VoiceError` (csm_app.voices), ValueError from the scheduler (text that cannot fit the window),
`ServiceBusy` (the waiting queue is full), `ServiceClosed` (draining for shutdown).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import deque
from numbers import Integral
from typing import Callable, Mapping, Sequence

import numpy as np

from csm_core import Segment
from csm_core.options import GenerationOptions, OptionError
from csm_core.scheduler import QueueFullError

from .voices import Voice, VoiceError, VoiceStore, check_name
from .watermarks import is_whole_clip

__all__ = ["SpeechService", "Stream", "ServiceBusy", "ServiceClosed", "GenerationFailed", "Voice"]

logger = logging.getLogger(__name__)

RATE_WINDOW_S = 10.0  # frames/s is averaged over this many seconds
MAX_VOICE_SECONDS = 60  # a voice's reference audio, all turns (60 s = 750 of the window's 2048 frames)


class ServiceBusy(RuntimeError):
    """Too many requests wait for a slot; `retry_after` is a hint in seconds."""

    def __init__(self, message: str, retry_after: int = 5):
        super().__init__(message)
        self.retry_after = retry_after


class ServiceClosed(RuntimeError):
    """The service is shutting down and admits no new request."""


class GenerationFailed(RuntimeError):
    """The model or codec failed while this request ran; `__cause__` is the original error."""


class _End:
    __slots__ = ("error", "cancelled")

    def __init__(self, error: BaseException | None, cancelled: bool = False):
        self.error, self.cancelled = error, cancelled


class Stream:
    """One request's audio on its way to an asyncio consumer: `async for chunk in stream` gives
    float32 chunks (watermarked at their place in the utterance) until the request ends, and
    raises GenerationFailed if the model failed. `cancel()` ends it early (safe from any thread)."""

    def __init__(self, service: "SpeechService", text: str, voice: Voice, options: GenerationOptions, loop):
        self.service, self.text, self.voice, self.options = service, text, voice, options
        self.job = None
        self.samples = 0  # samples handed out so far (the next chunk's watermark position)
        self.opened_at = time.perf_counter()
        self.first_audio_s: float | None = None  # from open() to the first chunk handed out
        self.cancelled_at_step: int | None = None  # the scheduler's step count when cancel() was called
        self.freed_after_steps: int | None = None  # model steps between cancel() and the slot's release
        self._loop = loop
        self._queue: asyncio.Queue = asyncio.Queue()
        self._frames_seen = 0
        self._ended = False
        self._held: list[np.ndarray] = []  # a whole-clip mark's audio until the request ends

    # ---- the consumer's side (event loop) ----
    def __aiter__(self):
        return self

    async def __anext__(self) -> np.ndarray:
        # A whole-clip watermark (SilentCipher) marks the utterance once it has ended: it comes as one
        # chunk, and a cancelled request's held audio is dropped unmarked (nobody listens any more).
        whole = is_whole_clip(self.service.tts.watermarker)
        while True:
            item = await self._queue.get()
            if isinstance(item, _End):
                self._queue.put_nowait(item)  # later calls end too
                held, self._held = self._held, []
                if item.error is not None:
                    raise GenerationFailed(f"generation failed: {type(item.error).__name__}: {item.error}") from item.error
                if held and not item.cancelled:
                    return await self._marked(np.concatenate(held))
                raise StopAsyncIteration
            if item.size == 0:
                continue
            if whole:
                self._held.append(item)
                continue
            return await self._marked(item)

    async def _marked(self, audio: np.ndarray) -> np.ndarray:
        start, self.samples = self.samples, self.samples + audio.size
        if self.service.tts.watermarker is not None:  # off the event loop: it is numpy work
            audio = await asyncio.to_thread(self.service.mark, audio, start)
        if self.first_audio_s is None:
            self.first_audio_s = time.perf_counter() - self.opened_at
        return audio

    @property
    def frames(self) -> int:
        return 0 if self.job is None else len(self.job.frames)

    @property
    def state(self) -> str:
        return "waiting" if self.job is None else self.job.state

    def cancel(self) -> None:
        """Stop generating (the client left); the slot is freed before the scheduler's next step."""
        if self.job is not None and not self.job.done:
            self.cancelled_at_step = self.service.scheduler.steps
            self.job.cancel()
            self.service._wake()

    # ---- the model's side (worker thread): the job's listener ----
    def _on_job(self, job) -> None:
        new = len(job.frames) - self._frames_seen
        if new > 0:
            self._frames_seen += new
            self.service._count_frames(new)
        items: list = job.take_audio()
        if job.done and not self._ended:
            self._ended = True
            self.service._ended(self, job)
            items.append(_End(job.error, job.state == "cancelled"))
        if items:
            try:
                self._loop.call_soon_threadsafe(self._put, items)
            except RuntimeError:  # the consumer's event loop is gone: nobody listens
                job.cancel()

    def _end(self, error: BaseException) -> None:
        if not self._ended:
            self._ended = True
            self.service._streams.discard(self)
            try:
                self._loop.call_soon_threadsafe(self._put, [_End(error)])
            except RuntimeError:
                pass

    def _put(self, items: list) -> None:
        for item in items:
            self._queue.put_nowait(item)


class SpeechService:
    """Continuous batching behind an HTTP server (see the module docstring).

    tts: a loaded `CSM` (model, tokenizer, codec; its `watermarker`, whatever it is, marks the
    output); slots: requests generated at once; max_waiting: requests that may wait for a slot
    (more: ServiceBusy); defaults: the options a request starts from; max_audio_ms_limit: the most
    audio one request may ask for; data_dir: where API voices are kept (None: in memory only).
    """

    def __init__(
        self,
        tts,
        voices: Sequence[Voice] = (),
        *,
        slots: int = 1,
        max_waiting: int = 8,
        chunk_frames: int = 5,
        prefill_rows: int = 128,
        defaults: GenerationOptions | None = None,
        max_audio_ms_limit: float | None = None,
        data_dir=None,
    ):
        self.tts = tts
        self.sample_rate = int(tts.sample_rate)
        self.defaults = defaults or GenerationOptions()
        self.max_audio_ms_limit = max_audio_ms_limit
        # the facade's scheduler: the backend's own slots (a backend that is not a SlotModel runs one slot)
        self.scheduler = tts.scheduler(slots, chunk_frames=chunk_frames, prefill_rows=prefill_rows, max_waiting=max_waiting)
        self.voices = VoiceStore(data_dir, voices)
        self.admitting = True
        self.frames_total = 0
        self.finished: dict[str, int] = {"done": 0, "cancelled": 0, "failed": 0}
        self.last_error: BaseException | None = None
        self.freed_after_steps: deque[int] = deque(maxlen=100)  # per cancelled stream: model steps from cancel() to release
        self._rate: deque[tuple[float, int]] = deque()  # (when, frames) of recent steps
        self._rate_lock = threading.Lock()
        self._streams: set[Stream] = set()
        self._calls: deque[tuple[Callable, concurrent.futures.Future]] = deque()
        self._cv = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._work, name="csm-model", daemon=True)

    # ---- life ----
    def start(self) -> "SpeechService":
        self._worker.start()
        return self

    @property
    def ready(self) -> bool:
        """The model is loaded and its worker runs, and new requests are admitted."""
        return self._worker.is_alive() and self.admitting and not self._closed

    def stop_admitting(self) -> None:
        """Shutting down: new requests get ServiceClosed; running ones go on."""
        self.admitting = False

    def cancel_all(self) -> None:
        for stream in list(self._streams):
            stream.cancel()

    async def drain(self, grace_s: float) -> int:
        """Stop admitting, let the running streams finish for up to `grace_s`, then cancel the
        rest. Returns how many were cancelled."""
        self.stop_admitting()
        deadline = time.monotonic() + grace_s
        while self._streams and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        left = len(self._streams)
        self.cancel_all()
        return left

    def close(self, timeout: float = 30.0) -> None:
        """Cancel everything and stop the worker (after its current step)."""
        self.stop_admitting()
        self.cancel_all()
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        if self._worker.is_alive() and threading.current_thread() is not self._worker:
            self._worker.join(timeout)

    # ---- requests ----
    def options(self, values: Mapping) -> GenerationOptions:
        """A request's options on top of the server's defaults (OptionError names the field)."""
        opts = GenerationOptions.from_mapping(values, base=self.defaults)
        limit = self.max_audio_ms_limit
        if limit is not None and opts.max_audio_ms > limit:
            raise OptionError("max_audio_ms", f"max_audio_ms={opts.max_audio_ms:g} is above this server's limit of {limit:g} ms")
        return opts

    def voice(self, value) -> Voice:
        """A named voice, or a speaker id (an integer >= 0, or its digits) without context."""
        if isinstance(value, str) and (found := self.voices.get(value)) is not None:
            return found
        if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 9:  # "²".isdigit() is true
            value = int(value)
        if isinstance(value, Integral) and not isinstance(value, bool) and value >= 0:
            return Voice(str(value), int(value))
        known = ", ".join(v.name for v in self.voices.list()) or "none yet"
        raise VoiceError("voice", f"unknown voice {value!r}: give a speaker id (0, 1, ...) or a named voice ({known})", "not_found")

    def open(self, text: str, voice: Voice, options: GenerationOptions, loop=None) -> Stream:
        """Queue a request (checked now: a bad one raises here and disturbs nobody)."""
        if not self.admitting or self._closed:
            raise ServiceClosed("the server is shutting down and takes no new request")
        stream = Stream(self, text, voice, options, loop or asyncio.get_running_loop())
        try:
            stream.job = self.scheduler.submit(text, voice.speaker, voice.context, options, listener=stream._on_job)
        except QueueFullError as e:
            raise ServiceBusy(f"busy: {self.scheduler.waiting} requests wait for a slot already; retry later") from e
        self._streams.add(stream)
        self._wake()
        return stream

    async def add_voice(self, name: str, turns: Sequence[tuple[int, str, np.ndarray]], speaker: int | None = None) -> Voice:
        """Encode the turns' audio (float32 at the codec rate) once, on the model's thread between
        steps, and keep the voice (persisted when the service has a data dir)."""
        check_name(name)
        if self.voices.get(name) is not None:
            raise VoiceError("name", f"a voice named {name!r} exists already; delete it first", "conflict")
        if not turns:
            raise VoiceError("turns", "a voice needs at least one turn: audio and its transcript")
        segments = [Segment(int(s), t, audio=a) for s, t, a in turns]
        seconds = sum(s.audio.size for s in segments) / self.sample_rate
        if seconds > MAX_VOICE_SECONDS:
            raise VoiceError("audio", f"the voice's audio lasts {seconds:.1f} s; at most {MAX_VOICE_SECONDS} s "
                                      "(the context shares the model's 2048-frame window with the speech)")  # fmt: skip
        encoded = await asyncio.wrap_future(self._call(lambda: self.tts.encode_context(segments)))
        who = segments[-1].speaker if speaker is None else int(speaker)
        return self.voices.add(Voice(name, who, tuple(encoded), "api"))

    def remove_voice(self, name: str) -> Voice:
        return self.voices.remove(name)

    def mark(self, audio: np.ndarray, start_sample: int) -> np.ndarray:
        """The facade's watermarker (whichever it holds; none: unchanged) at this position."""
        return self.tts.mark(audio, start_sample)

    # ---- numbers for health and metrics ----
    @property
    def running(self) -> int:
        return self.scheduler.running

    @property
    def waiting(self) -> int:
        return self.scheduler.waiting

    @property
    def slots(self) -> int:
        return self.scheduler.slots

    def frames_per_second(self) -> float:
        """Frames generated per second over the last RATE_WINDOW_S seconds (all streams)."""
        now = time.monotonic()
        with self._rate_lock:
            rate = self._rate
            while rate and rate[0][0] < now - RATE_WINDOW_S:
                rate.popleft()
            return sum(n for _, n in rate) / RATE_WINDOW_S

    # ---- the worker ----
    def _wake(self) -> None:
        with self._cv:
            self._cv.notify_all()

    def _call(self, fn: Callable) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._cv:
            if self._closed:
                raise ServiceClosed("the server is shutting down")
            self._calls.append((fn, future))
            self._cv.notify_all()
        return future

    def _work(self) -> None:
        sched = self.scheduler
        while True:
            with self._cv:
                while not self._closed and not self._calls and not sched.busy:
                    self._cv.wait()
                if self._closed:
                    break
                calls = list(self._calls)
                self._calls.clear()
            for fn, future in calls:  # e.g. encoding a new voice: between two steps
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn())
                    except BaseException as e:  # noqa: BLE001 - handed to the caller
                        future.set_exception(e)
            try:
                if not sched.step() and sched.busy:
                    time.sleep(0.001)  # nothing to feed this instant (e.g. all waiting were cancelled)
            except Exception as e:  # noqa: BLE001 - the jobs of this step have failed and were told; go on
                self.last_error = e
                logger.exception("model step failed")
        for fn, future in self._calls:
            future.cancel()
        for stream in list(self._streams):  # never to be stepped again: their consumers must not wait on
            stream._end(ServiceClosed("the server shut down before this request ended"))

    def _count_frames(self, n: int) -> None:
        self.frames_total += n
        with self._rate_lock:
            self._rate.append((time.monotonic(), n))

    def _ended(self, stream: Stream, job) -> None:
        self._streams.discard(stream)
        self.finished[job.state] = self.finished.get(job.state, 0) + 1
        if stream.cancelled_at_step is not None:
            stream.freed_after_steps = self.scheduler.steps - stream.cancelled_at_step
            self.freed_after_steps.append(stream.freed_after_steps)
