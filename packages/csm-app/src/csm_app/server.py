"""`csm serve`: speech over HTTP with an OpenAI-compatible endpoint (standard library only).

    POST /v1/audio/speech   {"input": "Hello.", "voice": "0", "response_format": "wav"}
    GET  /v1/voices         the voices: speaker ids, and named voices given at start (context turns)
    GET  /v1/models         the one model, for OpenAI clients that list models
    GET  /health            {"status": "ok", "busy": ...}

Request fields: "input" (required text), "voice" (a named voice, or a speaker id as an integer or
digits; default "0"), "response_format" (wav | pcm | flac | mp3 | opus | ogg; default wav; pcm is
raw 16-bit little-endian mono at 24 kHz), "model" (accepted and ignored: one model is loaded),
"speed" (1.0 only), "stream_format" ("audio" only); extensions: "temperature", "topk", "seed",
"max_audio_ms", "split_sentences". wav and pcm are streamed (chunked transfer) as frames are
decoded; the other formats are encoded whole when generation ends. Errors are JSON
{"error": {"message", "type", "param"}} with status 400 (bad request), 404, 405, 411, 413, 500, or
503 (with Retry-After) when `max_waiting` requests already wait. One worker thread owns the model
and serves requests in arrival order; requests that wait together and can share a batch (one
sentence each, the same options, no seed) are generated as one batch (`max_batch`), each streamed
as its row's frames are decoded. Health and listings answer meanwhile.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import queue
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from numbers import Integral, Real

import numpy as np

from csm_core import Segment
from csm_core.generation import DEFAULT_MAX_AUDIO_MS, Request
from csm_core.text_split import split_sentences

__all__ = ["Voice", "SpeechService", "ApiError", "make_server"]

logger = logging.getLogger(__name__)

MAX_BODY = 1 << 20
MAX_INPUT_CHARS = 4096  # as OpenAI's endpoint
STREAMED = ("wav", "pcm")
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
                self.tts.check_requests([_request(job)], max_audio_ms=limit)
                fits.append(job)
            except (TypeError, ValueError) as e:
                job.out.put(e)
        if len(fits) == 1:
            return self._run_one(fits[0])
        if not fits:
            return
        options = {k: v for k, v in fits[0].options.items() if k != "split_sentences"}
        events = self.tts.stream_batch([_request(j) for j in fits], chunk_frames=self.chunk_frames, **options)
        ended = set()
        try:
            for i, chunk in events:
                fits[i].out.put(END if chunk is None else chunk)
                if chunk is None:
                    ended.add(i)
                if all(i in ended or j.cancelled.is_set() for i, j in enumerate(fits)):
                    return
        finally:
            events.close()

    def voice(self, value) -> Voice:
        if isinstance(value, str) and value in self.voices:
            return self.voices[value]
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if isinstance(value, Integral) and not isinstance(value, bool) and value >= 0:
            return Voice(str(value), int(value))
        known = ", ".join(sorted(self.voices)) or "none"
        raise ApiError(400, f"unknown voice {value!r}: give a speaker id (0, 1, ...) or a named voice ({known})", "voice")

    def parse(self, body: bytes) -> Job:
        try:
            req = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ApiError(400, f"the request body is not JSON: {e}") from None
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
        if fmt not in CONTENT_TYPES:
            raise ApiError(400, f"'response_format' {fmt!r} is not one of {', '.join(CONTENT_TYPES)}", "response_format")
        speed = req.get("speed", 1.0)
        if not _number(speed) or speed != 1.0:
            raise ApiError(400, f"'speed' {speed!r} is not supported: only 1.0", "speed")
        if req.get("stream_format", "audio") != "audio":
            raise ApiError(400, "'stream_format' must be 'audio' (no server-sent events)", "stream_format")
        if req.get("instructions"):
            raise ApiError(400, "'instructions' are not supported: CSM takes its style from a voice's context", "instructions")
        options = dict(self.defaults)
        for name, check, what in (
            ("temperature", lambda v: _number(v) and 0 <= v < math.inf, "a number >= 0"),
            ("topk", lambda v: _integer(v) and v >= 1, "an integer >= 1"),
            ("seed", lambda v: v is None or _integer(v), "an integer or null"),
            ("max_audio_ms", lambda v: _number(v) and 80 <= v < math.inf, "a number of milliseconds >= 80"),
            ("split_sentences", lambda v: isinstance(v, bool), "true or false"),
        ):
            if name in req:
                if not check(req[name]):
                    raise ApiError(400, f"'{name}' must be {what}, got {req[name]!r}", name)
                options[name] = req[name]
        return Job(text, self.voice(req.get("voice", "0")), fmt, options)

    def describe_voices(self) -> dict:
        named = [{"name": v.name, "speaker": v.speaker, "context_turns": len(v.context)} for v in self.voices.values()]
        return {"voices": named, "speaker_ids": "any integer >= 0 (\"0\", \"1\", ...) is a voice without context"}


def _number(v) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool) and not math.isnan(v)


def _integer(v) -> bool:
    return isinstance(v, Integral) and not isinstance(v, bool)


class _Chunked:
    """A write-only file that sends each write as one HTTP/1.1 chunk."""

    def __init__(self, wfile):
        self.wfile = wfile

    def write(self, data: bytes) -> None:
        if data:
            self.wfile.write(b"%X\r\n%s\r\n" % (len(data), data))

    def flush(self) -> None:
        self.wfile.flush()

    def seekable(self) -> bool:
        return False

    def end(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "csm"
    service: SpeechService  # set on the subclass make_server builds

    # ---- routing ----
    def do_GET(self) -> None:  # http.server's naming
        routes = {
            "/health": lambda: {"status": "ok", "busy": self.service.busy, "waiting": self.service.waiting,
                                "sample_rate": self.service.tts.sample_rate, "backend": _backend(self.service.tts)},
            "/v1/models": lambda: {"object": "list", "data": [{"id": "csm-1b", "object": "model", "owned_by": "sesame"}]},
            "/v1/voices": self.service.describe_voices,
        }  # fmt: skip
        path = self.path.split("?", 1)[0]
        if path == "/v1/audio/speech":
            return self._error(ApiError(405, "use POST for /v1/audio/speech"), allow="POST")
        if path not in routes:
            return self._error(ApiError(404, f"no such endpoint {path!r}; see /v1/audio/speech", kind="not_found"))
        self._json(200, routes[path]())

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        if path != "/v1/audio/speech":
            if path in ("/health", "/v1/models", "/v1/voices"):
                return self._error(ApiError(405, f"use GET for {path}"), allow="GET")
            return self._error(ApiError(404, f"no such endpoint {path!r}; see /v1/audio/speech", kind="not_found"))
        try:
            job = self.service.parse(self._body())
        except ApiError as e:
            return self._error(e)
        try:
            self.service.submit(job)
        except ApiError as e:  # the queue is full
            return self._error(e, retry_after="5")
        try:
            self._answer(job)
        finally:
            job.cancelled.set()  # however the answer ended, the worker need not go on with it

    # ---- speech ----
    def _answer(self, job: Job) -> None:
        from csm_audio.io import WavStreamWriter, encode_audio

        from .audio_io import pcm16

        rate = self.service.tts.sample_rate
        try:
            first = _next(job)  # waits for the model; input it cannot take fails here, before any byte
            if first is not END and job.fmt not in STREAMED:
                chunks = [first]
                while (chunk := _next(job)) is not END:
                    chunks.append(chunk)
                data = encode_audio(np.concatenate(chunks), rate, format=job.fmt)
        except (ValueError, TypeError) as e:
            return self._error(ApiError(400, str(e), "input"))
        except Exception as e:  # noqa: BLE001 - the server boundary: answer, log, stay up
            logger.error("generation failed: %s: %s", type(e).__name__, e)
            return self._error(ApiError(500, f"generation failed: {type(e).__name__}: {e}", kind="server_error"))
        if first is END:
            return self._error(ApiError(500, "no audio was generated (the model stopped at once)", kind="server_error"))
        if job.fmt not in STREAMED:
            return self._send(200, CONTENT_TYPES[job.fmt], data, rate=rate)
        self._head(200, CONTENT_TYPES[job.fmt], {"Transfer-Encoding": "chunked", "X-Sample-Rate": str(rate)})
        out = _Chunked(self.wfile)
        try:
            wav = WavStreamWriter(out, rate) if job.fmt == "wav" else None
            chunk = first
            while chunk is not END:
                if wav is None:
                    out.write(pcm16(chunk))
                else:
                    wav.write(chunk)
                out.flush()
                chunk = _next(job)
            out.end()
        except (BrokenPipeError, ConnectionResetError):
            logger.info("the client went away; generation stopped")
            self.close_connection = True
        except Exception as e:  # noqa: BLE001 - headers are out: end the stream unterminated so the client sees a failure
            logger.error("generation failed while streaming: %s: %s", type(e).__name__, e)
            self.close_connection = True

    # ---- plumbing ----
    def _body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked" or length is None:
            self.close_connection = True
            raise ApiError(411, "send the JSON body with a Content-Length header")
        try:
            n = int(length)
        except ValueError:
            self.close_connection = True
            raise ApiError(400, f"bad Content-Length {length!r}") from None
        if n > MAX_BODY or n < 0:
            self.close_connection = True
            raise ApiError(413, f"the request body has {n} bytes; at most {MAX_BODY}")
        return self.rfile.read(n)

    def _head(self, status: int, content_type: str, headers: dict) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for k, v in headers.items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()

    def _send(self, status: int, content_type: str, data: bytes, rate: int | None = None, **extra) -> None:
        headers = {"Content-Length": str(len(data)), **extra}
        if rate is not None:
            headers["X-Sample-Rate"] = str(rate)
        self._head(status, content_type, headers)
        self.wfile.write(data)
        self.wfile.flush()

    def _json(self, status: int, obj: dict, **extra) -> None:
        self._send(status, "application/json", json.dumps(obj).encode() + b"\n", **extra)

    def _error(self, e: ApiError, **extra) -> None:
        extra = {k.replace("_", "-").title(): v for k, v in extra.items()}
        self._json(e.status, {"error": {"message": e.message, "type": e.kind, "param": e.param}}, **extra)

    def log_message(self, format: str, *args) -> None:  # http.server's signature
        logger.info("%s %s", self.address_string(), format % args)


def _next(job: Job):
    """The job's next chunk or END; what stopped the worker is raised here."""
    item = job.out.get()
    if isinstance(item, BaseException):
        raise item
    return item


def _request(job: Job) -> Request:
    return Request(job.text, job.voice.speaker, job.voice.context)


def _backend(tts) -> str | None:
    return tts.info.backend_name if getattr(tts, "info", None) else None


def make_server(service: SpeechService, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """A threading HTTP server bound to (host, port) (port 0: any free one; see server_address)."""
    handler = type("CsmHandler", (Handler,), {"service": service})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
