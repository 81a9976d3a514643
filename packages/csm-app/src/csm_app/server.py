"""`csm serve`: an OpenAI-compatible speech API on FastAPI + uvicorn. This module only parses,
validates and streams; the model side is `speech_service.SpeechService` (continuous batching).

    POST   /v1/audio/speech          OpenAI's fields + csm's own (temperature, topk, seed, ...)
    GET    /v1/audio/voices          named voices; POST adds one (multipart or JSON), DELETE /{id}
    GET    /v1/models                the one model, for clients that list models
    GET    /health, /health/ready    liveness, readiness (model loaded, admitting)
    GET    /metrics                  Prometheus text format
    GET    /                         a web page to try it (static, no CDN)

Errors are OpenAI's shape: {"error": {"message", "type", "param", "code"}}. With an API key every
route but /health* and the page itself needs `Authorization: Bearer KEY`. The request bodies are in
api_schema.py, the key / body-size / metrics middleware in api_guard.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import signal
import time
from importlib import resources

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from csm_core.options import OptionError

from .api_guard import Guard, Metrics
from .api_schema import CONTENT_TYPES, ApiError, SpeechRequest, VoiceCreate, VoiceRef, error_response, validation_error
from .audio_io import STREAMED_FORMATS, FormatUnavailable, WavChunks, check_response_format, encode_response, load_audio
from .audio_io import pcm16
from .speech_service import GenerationFailed, ServiceBusy, ServiceClosed, SpeechService
from .voices import VoiceError

__all__ = ["create_app", "make_server", "run_server", "SpeechRequest", "ApiError"]

logger = logging.getLogger(__name__)

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
        return error_response(validation_error(e))

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
            if stream.state == "cancelled":  # a whole-clip mark's request cut by shutdown: no partial clip is sent
                raise ApiError(503, "the request was cancelled before its audio was complete (the server is shutting "
                                    "down); retry", kind="server_error", code="cancelled", headers={"Retry-After": "5"})  # fmt: skip
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

    app.add_middleware(Guard, metrics=metrics, api_key=api_key, max_body_bytes=max_body_bytes,
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
            raise validation_error(RequestValidationError(e.errors())) from None
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
