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

import json
import logging
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from .speech_service import CONTENT_TYPES, END, STREAMED, ApiError, Job, SpeechService, Voice

__all__ = ["SpeechService", "Voice", "ApiError", "make_server"]

logger = logging.getLogger(__name__)

MAX_BODY = 1 << 20


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
            first = job.next()  # waits for the model; input it cannot take fails here, before any byte
            if first is not END and job.fmt not in STREAMED:
                chunks = [first]
                while (chunk := job.next()) is not END:
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
                chunk = job.next()
            out.end()
        except (BrokenPipeError, ConnectionResetError):
            logger.info("the client went away; its audio is no longer generated")
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


def _backend(tts) -> str | None:
    return tts.info.backend_name if getattr(tts, "info", None) else None


def make_server(service: SpeechService, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """A threading HTTP server bound to (host, port) (port 0: any free one; see server_address)."""
    handler = type("CsmHandler", (Handler,), {"service": service})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
