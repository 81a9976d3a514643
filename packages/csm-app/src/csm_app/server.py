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
503 (with Retry-After) when `max_waiting` requests already wait. One model serves one request at a
time: others wait their turn (health and listings answer meanwhile).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from numbers import Integral, Real

import numpy as np

from csm_core import Segment

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


@dataclass
class Job:
    text: str
    voice: Voice
    fmt: str
    options: dict = field(default_factory=dict)


class SpeechService:
    """The model behind the server: checks requests, and generates one at a time."""

    def __init__(self, tts, voices=(), *, defaults: dict | None = None, chunk_frames: int = 5, max_waiting: int = 8):
        self.tts = tts
        self.voices = {v.name: v for v in voices}
        self.defaults = dict(defaults or {})
        self.chunk_frames = int(chunk_frames)
        self.max_waiting = int(max_waiting)
        self.lock = threading.Lock()  # held by the request being generated
        self.waiting = 0  # requests queued behind it
        self._count = threading.Lock()

    @contextlib.contextmanager
    def turn(self):
        """Wait for the model (one request at a time); ApiError 503 when `max_waiting` already wait."""
        with self._count:
            if self.lock.locked() and self.waiting >= self.max_waiting:
                raise ApiError(503, f"busy: {self.waiting} requests are waiting already; retry later", kind="server_busy")
            self.waiting += 1
        try:
            self.lock.acquire()
        finally:
            with self._count:
                self.waiting -= 1
        try:
            yield
        finally:
            self.lock.release()

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

    def chunks(self, job: Job):
        """The job's audio chunks (watermarked as the facade does); call with `lock` held."""
        return self.tts.stream(job.text, job.voice.speaker, job.voice.context, chunk_frames=self.chunk_frames,
                               **job.options)  # fmt: skip

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
            "/health": lambda: {"status": "ok", "busy": self.service.lock.locked(), "waiting": self.service.waiting,
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
            with self.service.turn():
                self._speak(job)
        except ApiError as e:  # only turn() raises here: the queue is full
            self._error(e, retry_after="5")

    # ---- speech ----
    def _speak(self, job: Job) -> None:
        chunks = self.service.chunks(job)
        try:
            self._answer(job, chunks)
        finally:
            chunks.close()  # stops generation early when the answer ended early

    def _answer(self, job: Job, chunks) -> None:
        from csm_audio.io import WavStreamWriter, encode_audio

        from .audio_io import pcm16

        rate = self.service.tts.sample_rate
        try:
            first = next(chunks, None)  # input the model cannot take fails here, before any byte is sent
            if first is not None and job.fmt not in STREAMED:
                data = encode_audio(np.concatenate([first, *chunks]), rate, format=job.fmt)
        except (ValueError, TypeError) as e:
            return self._error(ApiError(400, str(e), "input"))
        except Exception as e:  # noqa: BLE001 - the server boundary: answer, log, stay up
            logger.exception("generation failed")
            return self._error(ApiError(500, f"generation failed: {type(e).__name__}: {e}", kind="server_error"))
        if first is None:
            return self._error(ApiError(500, "no audio was generated (the model stopped at once)", kind="server_error"))
        if job.fmt not in STREAMED:
            return self._send(200, CONTENT_TYPES[job.fmt], data, rate=rate)
        self._head(200, CONTENT_TYPES[job.fmt], {"Transfer-Encoding": "chunked", "X-Sample-Rate": str(rate)})
        out = _Chunked(self.wfile)
        try:
            wav = WavStreamWriter(out, rate) if job.fmt == "wav" else None
            for chunk in _chain(first, chunks):
                if wav is None:
                    out.write(pcm16(chunk))
                else:
                    wav.write(chunk)
                out.flush()
            out.end()
        except (BrokenPipeError, ConnectionResetError):
            logger.info("the client went away; generation stopped")
            self.close_connection = True
        except Exception:  # noqa: BLE001 - headers are out: end the stream unterminated so the client sees a failure
            logger.exception("generation failed while streaming")
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


def _chain(first, rest):
    yield first
    yield from rest


def _backend(tts) -> str | None:
    return tts.info.backend_name if getattr(tts, "info", None) else None


def make_server(service: SpeechService, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """A threading HTTP server bound to (host, port) (port 0: any free one; see server_address)."""
    handler = type("CsmHandler", (Handler,), {"service": service})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
