"""The model behind `csm serve` (csm_app.server): request checking, a queue, and one worker
thread that owns the model and generates requests in arrival order, batching those that can share
a batch. Independent of HTTP: a request is parsed into a `Job`, `submit` queues it, and the worker
puts the job's audio chunks on `job.out` (read them with `job.next()` until END).
"""

from __future__ import annotations

import collections
import json
import logging
import math
import queue
import reprlib
import threading
from dataclasses import dataclass, field
from numbers import Integral, Real

from csm_core import Segment
from csm_core.generation import DEFAULT_MAX_AUDIO_MS, Request
from csm_core.text_split import split_sentences

__all__ = ["ApiError", "END", "Job", "SpeechService", "Voice", "CONTENT_TYPES", "STREAMED"]

logger = logging.getLogger(__name__)

MAX_INPUT_CHARS = 4096  # as OpenAI's endpoint
STREAMED = ("wav", "pcm")  # formats sent as the chunks come; the others are encoded whole
CONTENT_TYPES = {
    "wav": "audio/wav", "pcm": "audio/pcm", "flac": "audio/flac", "mp3": "audio/mpeg",
    "opus": "audio/ogg; codecs=opus", "ogg": "audio/ogg",
}  # fmt: skip
FIELDS = ("input", "voice", "response_format", "model", "speed", "stream_format", "instructions",
          "temperature", "topk", "seed", "max_audio_ms", "split_sentences")  # fmt: skip


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = int(status), message, param, kind


@dataclass(frozen=True)
class Voice:
    """A named voice: the speaker id to generate as, and context turns (their audio encoded)."""

    name: str
    speaker: int
    context: tuple[Segment, ...] = ()


END = object()  # a job's last item: its audio is complete


@dataclass(eq=False)
class Job:
    """One request on its way through the model: the worker puts audio chunks on `out`, then END
    (or the exception that stopped it); the handler sets `cancelled` when its client is gone."""

    text: str
    voice: Voice
    fmt: str
    options: dict = field(default_factory=dict)
    out: queue.Queue = field(default_factory=queue.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def next(self):
        """The next audio chunk or END, waiting for the worker; what stopped it is raised here."""
        item = self.out.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def request(self) -> Request:
        return Request(self.text, self.voice.speaker, self.voice.context)


class SpeechService:
    """The model behind the server: checks requests and queues them for one worker thread, which
    generates them in arrival order. Requests waiting together that can share a batch (one
    sentence, the same options, no seed) are generated as one batch of up to `max_batch`: each
    weight is read once per frame for all of them. More than `max_waiting` queued: 503."""

    def __init__(self, tts, voices=(), *, defaults: dict | None = None, chunk_frames: int = 5, max_waiting: int = 8,
                 max_batch: int = 4, start: bool = True):  # fmt: skip
        self.tts = tts
        self.voices = {v.name: v for v in voices}
        self.defaults = dict(defaults or {})
        self.chunk_frames = int(chunk_frames)
        self.max_waiting = int(max_waiting)
        self.max_batch = int(max_batch)
        self.busy = False  # the worker is generating
        self.batch_sizes: list[int] = []  # how many requests each generation served, in order
        self._jobs: collections.deque[Job] = collections.deque()
        self._cv = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._work, name="csm-model", daemon=True)
        if start:
            self.start()

    @property
    def waiting(self) -> int:
        return len(self._jobs)

    def start(self) -> None:
        self._worker.start()

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    def submit(self, job: Job) -> None:
        with self._cv:
            if len(self._jobs) >= self.max_waiting and (self.busy or not self._worker.is_alive()):
                raise ApiError(503, f"busy: {len(self._jobs)} requests are waiting already; retry later",
                               kind="server_busy")  # fmt: skip
            self._jobs.append(job)
            self._cv.notify()

    # ---- the worker ----
    def _work(self) -> None:
        while (group := self._take()) is not None:
            try:
                self.batch_sizes.append(len(group))
                if len(group) == 1:
                    self._run_one(group[0])
                else:
                    self._run_batch(group)
            except Exception as e:  # noqa: BLE001 - every handler of the group hears of it; the worker goes on
                if not isinstance(e, (TypeError, ValueError)):  # those are the request's fault: a 400
                    logger.exception("generation failed")
                for job in group:  # a job that has its END already never reads this
                    job.out.put(e)
            finally:
                with self._cv:
                    self.busy = False

    def _take(self) -> list[Job] | None:
        """The next job and, when it can share a batch, the waiting jobs that can join it."""
        with self._cv:
            while True:
                while self._jobs and self._jobs[0].cancelled.is_set():
                    self._jobs.popleft()
                if self._jobs or self._closed:
                    break
                self._cv.wait()
            if self._closed:
                return None
            group = [self._jobs.popleft()]
            if self._batchable(group[0]):
                for job in list(self._jobs):
                    if len(group) == self.max_batch:
                        break
                    if self._batchable(job) and job.options == group[0].options and not job.cancelled.is_set():
                        self._jobs.remove(job)
                        group.append(job)
            self.busy = True
            return group

    def _batchable(self, job: Job) -> bool:
        one_sentence = not job.options.get("split_sentences", True) or len(split_sentences(job.text)) <= 1
        return self.max_batch > 1 and job.options.get("seed") is None and one_sentence

    def _run_one(self, job: Job) -> None:
        chunks = self.tts.stream(job.text, job.voice.speaker, job.voice.context, chunk_frames=self.chunk_frames,
                                 **job.options)  # fmt: skip
        try:
            for chunk in chunks:
                if job.cancelled.is_set():
                    return
                job.out.put(chunk)
            job.out.put(END)
        finally:
            chunks.close()

    def _run_batch(self, group: list[Job]) -> None:
        fits = []
        for job in group:  # a request the model cannot take fails alone, before the batch starts
            try:
                limit = job.options.get("max_audio_ms", DEFAULT_MAX_AUDIO_MS)
                self.tts.check_requests([job.request()], max_audio_ms=limit)
                fits.append(job)
            except (TypeError, ValueError) as e:
                job.out.put(e)
        if len(fits) == 1:
            return self._run_one(fits[0])
        if not fits:
            return
        options = {k: v for k, v in fits[0].options.items() if k != "split_sentences"}
        events = self.tts.stream_batch([j.request() for j in fits], chunk_frames=self.chunk_frames, **options)
        ended = set()
        try:
            for i, chunk in events:
                fits[i].out.put(END if chunk is None else chunk)
                if chunk is None:
                    ended.add(i)
                if all(k in ended or job.cancelled.is_set() for k, job in enumerate(fits)):
                    return  # nobody is listening any more: stop generating
        finally:
            events.close()

    def voice(self, value) -> Voice:
        if isinstance(value, str) and value in self.voices:
            return self.voices[value]
        if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 9:
            value = int(value)  # "0", "1", ...: ascii only ("²".isdigit() is true) and short (int() has a limit)
        if isinstance(value, Integral) and not isinstance(value, bool) and value >= 0:
            return Voice(str(value), int(value))
        known = ", ".join(sorted(self.voices)) or "none"
        raise ApiError(400, f"unknown voice {reprlib.repr(value)}: give a speaker id (0, 1, ...) or a named voice ({known})",
                       "voice")  # fmt: skip

    def parse(self, body: bytes) -> Job:
        try:
            req = json.loads(body)
        except (ValueError, RecursionError) as e:  # bad UTF-8 or JSON, a 5000-digit number, nesting too deep
            raise ApiError(400, f"the request body is not JSON: {type(e).__name__}: {str(e)[:200]}") from None
        if not isinstance(req, dict):
            raise ApiError(400, "the request body must be a JSON object")
        unknown = sorted(set(req) - set(FIELDS))
        if unknown:
            raise ApiError(400, f"unknown field(s) {', '.join(unknown)}; accepted: {', '.join(FIELDS)}", unknown[0])
        text = req.get("input")
        if not isinstance(text, str) or not text.strip():
            raise ApiError(400, "'input' must be a non-empty string: the text to speak", "input")
        if len(text) > MAX_INPUT_CHARS:
            raise ApiError(400, f"'input' has {len(text)} characters; at most {MAX_INPUT_CHARS}", "input")
        fmt = req.get("response_format", "wav")
        if not isinstance(fmt, str) or fmt not in CONTENT_TYPES:
            raise ApiError(400, f"'response_format' {reprlib.repr(fmt)} is not one of {', '.join(CONTENT_TYPES)}",
                           "response_format")  # fmt: skip
        speed = req.get("speed", 1.0)
        if not _number(speed) or speed != 1.0:
            raise ApiError(400, f"'speed' {reprlib.repr(speed)} is not supported: only 1.0", "speed")
        if req.get("stream_format", "audio") != "audio":
            raise ApiError(400, "'stream_format' must be 'audio' (no server-sent events)", "stream_format")
        if req.get("instructions"):
            raise ApiError(400, "'instructions' are not supported: CSM takes its style from a voice's context", "instructions")
        options = dict(self.defaults)
        for name, check, what in (
            ("temperature", lambda v: _number(v) and 0 <= v < _MAX_FLOAT, "a number >= 0"),
            ("topk", lambda v: _integer(v) and v >= 1, "an integer >= 1"),
            ("seed", lambda v: v is None or (_integer(v) and 0 <= v < 1 << 64), "an integer in [0, 2^64) or null"),
            ("max_audio_ms", lambda v: _number(v) and 80 <= v < _MAX_FLOAT, "a number of milliseconds >= 80"),
            ("split_sentences", lambda v: isinstance(v, bool), "true or false"),
        ):
            if name in req:
                if not check(req[name]):
                    raise ApiError(400, f"'{name}' must be {what}, got {reprlib.repr(req[name])}", name)
                options[name] = req[name]
        return Job(text, self.voice(req.get("voice", "0")), fmt, options)

    def describe_voices(self) -> dict:
        named = [{"name": v.name, "speaker": v.speaker, "context_turns": len(v.context)} for v in self.voices.values()]
        return {"voices": named, "speaker_ids": "any integer >= 0 (\"0\", \"1\", ...) is a voice without context"}


_MAX_FLOAT = 1e300  # an integer this large no longer converts to a float


def _number(v) -> bool:
    """A JSON number that is not NaN (an int is compared exactly: isnan(10**400) would overflow)."""
    return isinstance(v, Real) and not isinstance(v, bool) and (isinstance(v, Integral) or not math.isnan(v))


def _integer(v) -> bool:
    return isinstance(v, Integral) and not isinstance(v, bool)
