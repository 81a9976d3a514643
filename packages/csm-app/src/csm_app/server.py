"""`csm serve`: an OpenAI-compatible speech API on FastAPI + uvicorn. This module only parses,
validates and streams; the model side is `speech_service.SpeechService` (continuous batching).

    POST   /v1/audio/speech          OpenAI's fields + csm's own (temperature, topk, seed, ...)
    GET    /v1/audio/voices          named voices; POST adds one (multipart or JSON), DELETE /{id}
    GET    /v1/models                the one model, for clients that list models
    GET    /health, /health/ready    liveness, readiness (model loaded, admitting)
    GET    /metrics                  Prometheus text format
    GET    /                         a web page to try it (static, no CDN)

Errors are OpenAI's shape: {"error": {"message", "type", "param", "code"}}. With an API key every
route but /health* and the page itself needs `Authorization: Bearer KEY`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import signal
import time
from importlib import resources
from typing import Annotated, Literal, Union

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from csm_core.options import OptionError

from .audio_io import RESPONSE_FORMATS, STREAMED_FORMATS, FormatUnavailable, WavChunks, check_response_format
from .audio_io import encode_response, load_audio, pcm16
from .speech_service import GenerationFailed, ServiceBusy, ServiceClosed, SpeechService
from .voices import VoiceError

__all__ = ["create_app", "make_server", "run_server", "SpeechRequest", "ApiError"]

logger = logging.getLogger(__name__)

MAX_INPUT_CHARS = 4096  # as OpenAI's endpoint
CONTENT_TYPES = {"mp3": "audio/mpeg", "opus": "audio/ogg; codecs=opus", "aac": "audio/aac", "flac": "audio/flac",
                 "wav": "audio/wav", "pcm": "audio/pcm"}  # fmt: skip
OPEN_PATHS = ("/health", "/health/ready", "/", "/favicon.ico")  # no API key needed
CSM_OPTIONS = ("temperature", "topk", "seed", "max_audio_ms", "split_sentences")


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error",
                 code: str | None = None, headers: dict | None = None):  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.param, self.kind, self.code = status, message, param, kind, code
        self.headers = headers or {}


def error_response(e: ApiError) -> JSONResponse:
    body = {"error": {"message": e.message, "type": e.kind, "param": e.param, "code": e.code}}
    return JSONResponse(body, status_code=e.status, headers=e.headers)


# ---- the request, as OpenAI documents it, plus csm's fields ----
class VoiceRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(description="A voice's id: a named voice or a speaker id.")


class SpeechRequest(BaseModel):
    """OpenAI's `POST /v1/audio/speech` body; the fields after `stream_format` are csm's own."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="Accepted and ignored: one model is loaded.")
    input: str = Field(min_length=1, max_length=MAX_INPUT_CHARS, description="The text to speak.")
    voice: Union[str, int, VoiceRef] = Field(
        "0", description="A named voice (GET /v1/audio/voices), a speaker id (0, 1, ... or its digits), or {\"id\": ...}."
    )
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = Field(
        "mp3", description="pcm: raw 16-bit little-endian mono at 24 kHz. pcm and wav stream as frames are decoded; "
        "the others come whole. aac needs PyAV installed."
    )
    speed: float = Field(1.0, ge=0.25, le=4.0, strict=True, description="Only 1.0: csm does not time-stretch (other values: 400).")
    instructions: str | None = Field(
        None, max_length=MAX_INPUT_CHARS,
        description="Accepted and ignored: CSM-1B takes its style from the voice's context turns, not from instructions.",
    )
    stream_format: Literal["audio", "sse"] = Field(
        "audio", description="audio: the bytes of response_format; sse: speech.audio.delta events (base64), then speech.audio.done."
    )
    temperature: float | None = Field(None, ge=0, strict=True, description="csm: sampling temperature; 0 is greedy (server default 0.9).")
    topk: int | None = Field(None, ge=1, strict=True, description="csm: codes kept per sampling step (server default 50).")
    seed: int | None = Field(None, ge=0, lt=2**64, strict=True, description="csm: makes the codes reproducible, alone or in any batch.")
    max_audio_ms: float | None = Field(None, gt=0, strict=True, description="csm: longest audio per sentence, in ms (capped by the server).")
    split_sentences: bool | None = Field(None, strict=True, description="csm: speak long text sentence by sentence, each with the earlier ones as context.")

    def options(self) -> dict:
        """csm's generation fields the request set (the rest come from the server's defaults)."""
        return {k: getattr(self, k) for k in CSM_OPTIONS if k in self.model_fields_set and getattr(self, k) is not None}


class VoiceTurn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, description="The transcript of the audio.")
    audio: str = Field(min_length=1, description="The audio file (wav, flac, mp3, ogg, ...) in base64.")
    speaker: int = Field(0, ge=0)


class VoiceCreate(BaseModel):
    """A voice from one or several turns of reference audio with their transcripts (JSON form)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    turns: list[VoiceTurn] = Field(min_length=1)
    speaker: int | None = Field(None, ge=0, description="The speaker the voice speaks as (default: the last turn's).")


# ---- the app ----
class Metrics:
    def __init__(self, service: SpeechService):
        self.registry = r = CollectorRegistry()
        self.requests = Counter("csm_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.ttfa = Histogram("csm_time_to_first_audio_seconds", "Request received to first audio chunk ready",
                              buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30), registry=r)  # fmt: skip
        Gauge("csm_streams_running", "Requests generating in a slot", registry=r).set_function(lambda: service.running)
        Gauge("csm_streams_waiting", "Requests waiting for a slot", registry=r).set_function(lambda: service.waiting)
        Gauge("csm_slots", "Slots the scheduler holds", registry=r).set_function(lambda: service.slots)
        Gauge("csm_frames_per_second", "Frames generated per second, all streams (10 s average)",
              registry=r).set_function(service.frames_per_second)  # fmt: skip
        Gauge("csm_frames_generated_total", "Frames generated since start (80 ms of audio each)",
              registry=r).set_function(lambda: service.frames_total)  # fmt: skip
        Gauge("csm_ready", "1 when the model is loaded and requests are admitted", registry=r).set_function(
            lambda: 1 if service.ready else 0
        )


def create_app(service: SpeechService, *, api_key: str | None = None, max_body_bytes: int = 1 << 20,
               max_upload_bytes: int = 32 << 20, grace_s: float = 10.0, model_name: str = "csm-1b") -> FastAPI:  # fmt: skip
    """The ASGI app around a SpeechService (started with the app's lifespan if not yet)."""
    from contextlib import asynccontextmanager

    metrics = Metrics(service)

    @asynccontextmanager
    async def lifespan(app):
        if not service._worker.is_alive():
            service.start()
        yield
        left = await service.drain(0)  # uvicorn has waited its grace period for the streams
        if left:
            logger.warning("shutdown: %d streams still running were cancelled", left)
        service.close()

    app = FastAPI(title="csm", version="0.1.0", lifespan=lifespan,
                  description="CSM-1B speech: an OpenAI-compatible `/v1/audio/speech` with continuous batching.")  # fmt: skip
    app.state.service, app.state.metrics = service, metrics

    @app.exception_handler(ApiError)
    async def _api_error(request, e: ApiError):
        return error_response(e)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, e: RequestValidationError):
        return error_response(_validation_error(e))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, e: StarletteHTTPException):
        kind = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(e.status_code)
        message = {404: f"no such endpoint {request.url.path!r}; see /docs",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(e.status_code, str(e.detail))  # fmt: skip
        return error_response(ApiError(e.status_code, message, code=kind, headers=dict(e.headers or {})))

    @app.exception_handler(Exception)
    async def _crash(request, e: Exception):
        logger.exception("unexpected error on %s", request.url.path)
        return error_response(ApiError(500, f"internal error: {type(e).__name__}: {e}", kind="server_error"))

    # ---- health, metrics, page ----
    @app.get("/health", summary="Liveness")
    async def health():
        return {"status": "ok", "ready": service.ready, "running": service.running, "waiting": service.waiting,
                "slots": service.slots, "sample_rate": service.sample_rate, "backend": _backend(service.tts)}  # fmt: skip

    @app.get("/health/ready", summary="Readiness: the model is loaded and requests are admitted")
    async def ready():
        if service.ready:
            return {"ready": True}
        why = "shutting down" if not service.admitting else "the model worker is not running"
        return JSONResponse({"ready": False, "reason": why}, status_code=503)

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse(resources.files("csm_app").joinpath("static/index.html").read_text("utf-8"))

    @app.get("/v1/models", summary="The loaded model")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "sesame"}]}

    # ---- speech ----
    @app.post("/v1/audio/speech", summary="Speak text (OpenAI-compatible)",
              responses={200: {"content": {t: {} for t in {*CONTENT_TYPES.values(), "text/event-stream"}}}})  # fmt: skip
    async def speech(body: SpeechRequest, request: Request):
        received = time.perf_counter()
        fmt = body.response_format
        try:
            check_response_format(fmt)
        except FormatUnavailable as e:
            raise ApiError(400, str(e), "response_format", code="unsupported_format") from None
        if body.speed != 1.0:
            raise ApiError(400, f"speed={body.speed:g} is not supported: csm speaks at its own pace and does not "
                                "time-stretch; send 1.0 or leave it out", "speed", code="unsupported_value")  # fmt: skip
        voice_id = body.voice.id if isinstance(body.voice, VoiceRef) else body.voice
        stream = _open(service, body.input, voice_id, body.options())
        watcher = asyncio.create_task(_cancel_on_disconnect(request, stream))
        encoded = _encode(stream, fmt, service.sample_rate)
        try:
            first = await anext(encoded, None)  # waits for a slot and the first frames
        except BaseException as e:
            watcher.cancel()
            stream.cancel()
            if isinstance(e, GenerationFailed):
                raise ApiError(500, str(e), kind="server_error") from None
            raise
        if first is None:
            watcher.cancel()
            raise ApiError(500, "no audio was generated (the model stopped at once)", kind="server_error")
        metrics.ttfa.observe(stream.opened_at - received + stream.first_audio_s)  # whole formats too: the first chunk
        headers = {"X-Sample-Rate": str(service.sample_rate)}
        if body.stream_format == "audio" and fmt not in STREAMED_FORMATS:
            watcher.cancel()
            return Response(first, media_type=CONTENT_TYPES[fmt], headers=headers)
        sse = body.stream_format == "sse"
        tokens = len(service.tts.tokenizer.encode(body.input)) if sse else 0

        async def chunks():
            try:
                data = first
                while data is not None:
                    yield _sse({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()}) if sse else data
                    data = await anext(encoded, None)
                if sse:
                    usage = {"input_tokens": tokens, "output_tokens": stream.frames, "total_tokens": tokens + stream.frames}
                    yield _sse({"type": "speech.audio.done", "usage": usage})
            except GenerationFailed as e:
                logger.error("%s", e)
                if not sse:
                    raise  # the connection is cut without the closing chunk: the client sees it failed
                yield _sse({"type": "error", "error": {"message": str(e), "type": "server_error", "param": None, "code": None}})
            finally:
                watcher.cancel()
                stream.cancel()
                await encoded.aclose()

        media = "text/event-stream" if sse else CONTENT_TYPES[fmt]
        return StreamingResponse(chunks(), media_type=media, headers={**headers, "Cache-Control": "no-cache"})

    # ---- voices ----
    @app.get("/v1/audio/voices", summary="Named voices (speaker ids 0, 1, ... are voices too)")
    async def list_voices():
        return {"object": "list", "data": [v.describe() for v in service.voices.list()]}

    @app.post("/v1/audio/voices", status_code=201, summary="Add a voice: reference audio + transcript (encoded once, kept)",
              openapi_extra={"requestBody": {"content": {
                  "multipart/form-data": {"schema": {"type": "object", "required": ["name", "audio", "text"], "properties": {
                      "name": {"type": "string"}, "audio": {"type": "string", "format": "binary"},
                      "text": {"type": "string"}, "speaker": {"type": "integer", "minimum": 0}}}},
                  "application/json": {"schema": {"$ref": "#/components/schemas/VoiceCreate"}},
              }}})  # fmt: skip
    async def add_voice(request: Request):
        name, turns, speaker = await _voice_form(request, service.sample_rate)
        try:
            voice = await service.add_voice(name, turns, speaker)
        except VoiceError as e:
            raise _voice_api_error(e) from None
        except (ValueError, TypeError) as e:
            raise ApiError(400, str(e), "audio") from None
        return JSONResponse(voice.describe(), status_code=201)

    @app.delete("/v1/audio/voices/{voice_id}", summary="Delete a voice added over the API")
    async def delete_voice(voice_id: str):
        try:
            voice = service.remove_voice(voice_id)
        except VoiceError as e:
            raise _voice_api_error(e) from None
        return {"id": voice.name, "object": "voice", "deleted": True}

    app.add_middleware(_Guard, metrics=metrics, api_key=api_key, max_body_bytes=max_body_bytes,
                       max_upload_bytes=max_upload_bytes)  # fmt: skip
    _add_voice_schema(app)
    return app


def _add_voice_schema(app: FastAPI) -> None:
    """VoiceCreate is read by hand (multipart or JSON): add it and VoiceTurn to the schema's components."""
    original = app.openapi

    def openapi():
        if app.openapi_schema is None:
            schema = original()
            mine = VoiceCreate.model_json_schema(ref_template="#/components/schemas/{model}")
            extra = {**mine.pop("$defs", {}), "VoiceCreate": mine}
            schema.setdefault("components", {}).setdefault("schemas", {}).update(extra)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi


def _open(service: SpeechService, text: str, voice_id, options: dict):
    try:
        voice = service.voice(voice_id)
        opts = service.options(options)
        return service.open(text, voice, opts)
    except OptionError as e:
        raise ApiError(400, str(e), e.field, code="invalid_value") from None
    except VoiceError as e:
        raise ApiError(400, str(e), "voice", code="voice_not_found") from None
    except ServiceBusy as e:
        raise ApiError(503, str(e), kind="server_error", code="server_busy", headers={"Retry-After": str(e.retry_after)}) from None
    except ServiceClosed as e:
        raise ApiError(503, str(e), kind="server_error", code="shutting_down", headers={"Retry-After": "30"}) from None
    except (ValueError, TypeError) as e:  # the scheduler's checks: text that cannot fit, ...
        raise ApiError(400, str(e), "input") from None


async def _encode(stream, fmt: str, rate: int):
    """The response's bytes as they can be sent: pcm/wav per chunk, other formats whole at the end."""
    if fmt == "pcm":
        async for chunk in stream:
            yield pcm16(chunk)
    elif fmt == "wav":
        wav = WavChunks(rate)
        async for chunk in stream:
            yield wav.encode(chunk)
    else:
        parts = [chunk async for chunk in stream]
        if parts:
            yield await asyncio.to_thread(encode_response, np.concatenate(parts), rate, fmt)


async def _cancel_on_disconnect(request: Request, stream) -> None:
    """Cancel the request's generation as soon as its client goes away (even while it waits)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            if not stream.job.done:
                logger.info("the client went away; its audio is no longer generated")
            stream.cancel()
            return


def _sse(event: dict) -> bytes:
    return b"data: " + json.dumps(event).encode() + b"\n\n"


def _validation_error(e: RequestValidationError) -> ApiError:
    err = e.errors()[0]
    kind = err.get("type", "")
    loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)] if kind != "json_invalid" else []
    param = loc[0] if loc else None
    if kind == "extra_forbidden":
        message = f"unknown field {param!r}; accepted: {', '.join(SpeechRequest.model_fields)}"
    elif kind == "missing":
        message = f"{param!r} is required" if param else "the request body is required (JSON)"
    elif kind == "json_invalid" or (not param and kind in ("model_attributes_type", "dict_type")):
        message = f"the request body is not a JSON object: {err.get('msg')}"
    else:
        where = ".".join(loc) or "body"
        message = f"{where}: {err.get('msg')}; got {err.get('input')!r}"[:500]
    if param == "voice":  # the union's first failure says little: say what a voice is
        message = f"voice must be a string, a speaker id or {{\"id\": ...}}; got {err.get('input')!r}"
    return ApiError(400, message, param, code="invalid_value" if param else "invalid_request")


def _voice_api_error(e: VoiceError) -> ApiError:
    status = {"not_found": 404, "conflict": 409}.get(e.kind, 400)
    return ApiError(status, str(e), e.field, code={"not_found": "voice_not_found", "conflict": "voice_exists"}.get(e.kind))


async def _voice_form(request: Request, rate: int):
    """(name, [(speaker, text, float32 audio)], speaker) from multipart (one turn) or JSON (several)."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        form = await request.form()
        name, text, upload = form.get("name"), form.get("text"), form.get("audio")
        if not isinstance(name, str) or not name:
            raise ApiError(400, "'name' is required: the voice's name", "name")
        if not isinstance(text, str) or not text.strip():
            raise ApiError(400, "'text' is required: the transcript of the audio", "text")
        if upload is None or isinstance(upload, str):
            raise ApiError(400, "'audio' is required: the reference audio file", "audio")
        speaker = _form_int(form.get("speaker"), "speaker")
        turns = [(speaker or 0, text, _decode_audio(await upload.read(), rate, "audio"))]
        return name, turns, speaker
    try:
        data = VoiceCreate.model_validate_json(await request.body())
    except Exception as e:  # pydantic's ValidationError: the same shape as the speech errors
        if hasattr(e, "errors"):
            raise _validation_error(RequestValidationError(e.errors())) from None
        raise
    turns = []
    for i, t in enumerate(data.turns):
        try:
            raw = base64.b64decode(t.audio, validate=True)
        except ValueError:
            raise ApiError(400, f"turns[{i}].audio is not base64", f"turns.{i}.audio") from None
        turns.append((t.speaker, t.text, _decode_audio(raw, rate, f"turns.{i}.audio")))
    return data.name, turns, data.speaker


def _form_int(value, param: str) -> int | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not value.isdigit():
        raise ApiError(400, f"{param!r} must be an integer >= 0, got {value!r}", param)
    return int(value)


def _decode_audio(data: bytes, rate: int, param: str) -> np.ndarray:
    try:
        return load_audio(data, rate)
    except ValueError as e:
        raise ApiError(400, f"{param}: {e}", param) from None


def _backend(tts) -> str | None:
    return tts.info.backend_name if getattr(tts, "info", None) else None


# ---- middleware: key, body size, request counts ----
class _Guard:
    """Pure ASGI (streams pass through untouched): counts requests by status, checks the bearer
    key and refuses bodies over the limit (413) by Content-Length or as they arrive."""

    def __init__(self, app, *, metrics: Metrics, api_key: str | None, max_body_bytes: int, max_upload_bytes: int):
        self.app, self.metrics, self.key = app, metrics, api_key
        self.max_body, self.max_upload = max_body_bytes, max_upload_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        route = path if path in _ROUTES else ("/v1/audio/voices/{id}" if path.startswith("/v1/audio/voices/") else "other")
        status = {"code": 500}

        async def counted_send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        if path == "/v1/audio/speech":  # JSON whatever the Content-Type says (curl -d sends form encoding)
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope = {**scope, "headers": headers + [(b"content-type", b"application/json")]}
        try:
            refusal = self._refuse(scope, path)
            if refusal is not None:
                await _send_error(counted_send, refusal)
                return
            limit = self.max_upload if path == "/v1/audio/voices" else self.max_body
            received = 0

            async def limited_receive():
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise _TooLarge(limit)
                return message

            try:
                await self.app(scope, limited_receive, counted_send)
            except _TooLarge as e:
                await _send_error(counted_send, ApiError(413, f"the request body is over {e.limit} bytes", code="request_too_large"))
        finally:
            self.metrics.requests.labels(route, str(status["code"])).inc()

    def _refuse(self, scope, path: str) -> ApiError | None:
        headers = dict(scope["headers"])
        if self.key is not None and path not in OPEN_PATHS:
            auth = headers.get(b"authorization", b"").decode("latin-1")
            if auth != f"Bearer {self.key}":
                why = "no API key given" if not auth else "the API key is wrong"
                return ApiError(401, f"{why}: send Authorization: Bearer <key>", code="invalid_api_key",
                                headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        length = headers.get(b"content-length")
        limit = self.max_upload if path == "/v1/audio/voices" else self.max_body
        if length is not None:
            if not length.isdigit():
                return ApiError(400, f"bad Content-Length {length.decode('latin-1')!r}")
            if int(length) > limit:
                return ApiError(413, f"the request body has {int(length)} bytes; at most {limit}", code="request_too_large")
        return None


_ROUTES = {"/", "/health", "/health/ready", "/metrics", "/v1/models", "/v1/audio/speech", "/v1/audio/voices",
           "/docs", "/openapi.json"}  # fmt: skip


class _TooLarge(StarletteHTTPException):
    """Raised by the body counter; an HTTPException so that FastAPI's body parsing lets it through."""

    def __init__(self, limit: int):
        super().__init__(413, f"the request body is over {limit} bytes")
        self.limit = limit


async def _send_error(send, e: ApiError) -> None:
    body = json.dumps({"error": {"message": e.message, "type": e.kind, "param": e.param, "code": e.code}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in e.headers.items()]
    if e.status in (400, 413):
        headers.append((b"connection", b"close"))  # the unread body must not be taken for the next request
    await send({"type": "http.response.start", "status": e.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# ---- running it ----
def run_server(service: SpeechService, host: str = "127.0.0.1", port: int = 8000, **options) -> None:
    """Serve until SIGINT/SIGTERM: then stop admitting (503), let running streams finish for up to
    `grace_s` seconds, cancel the rest and return (the process exits 0). Options: make_server's."""
    make_server(service, host, port, **options).run()


def make_server(service: SpeechService, host: str = "127.0.0.1", port: int = 8000, *, grace_s: float = 10.0,
                on_listening=None, log_level: str = "warning", **app_options):  # fmt: skip
    """A uvicorn server for the app (`.run()` blocks; from another thread set `.should_exit`).
    `on_listening(host, port)` is called once the socket listens (port 0: the one picked)."""
    import uvicorn

    app = create_app(service, grace_s=grace_s, **app_options)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on",
                            timeout_graceful_shutdown=grace_s, access_log=False)  # fmt: skip
    return _Server(config, service, on_listening)


def _uvicorn_server_class():
    import uvicorn

    return uvicorn.Server


class _Server(_uvicorn_server_class()):
    """uvicorn's server with csm's shutdown: the service stops admitting at the first signal, and a
    signal ends the process with status 0 instead of being raised again after the shutdown."""

    def __init__(self, config, service: SpeechService, on_listening=None):
        super().__init__(config)
        self.service, self.on_listening = service, on_listening

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        if self.on_listening is not None and self.servers:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            self.on_listening(host, port)

    def handle_exit(self, sig, frame) -> None:
        self.service.stop_admitting()
        super().handle_exit(sig, frame)

    def capture_signals(self):
        import contextlib
        import threading

        if threading.current_thread() is not threading.main_thread():
            return contextlib.nullcontext()  # signals reach the main thread only (tests run servers in threads)

        @contextlib.contextmanager
        def handlers():
            previous = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for s, h in previous.items():
                    signal.signal(s, h)

        return handlers()
