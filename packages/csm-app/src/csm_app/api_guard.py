"""What every request of the HTTP API passes through, as pure ASGI middleware (streams go through
untouched): the bearer key, the body size limit, and the request counts of the Prometheus metrics."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.exceptions import HTTPException as StarletteHTTPException

from .api_schema import ApiError

if TYPE_CHECKING:
    from .speech_service import SpeechService

__all__ = ["Guard", "Metrics", "OPEN_PATHS", "TooLarge"]

OPEN_PATHS = ("/health", "/health/ready", "/", "/favicon.ico")  # no API key needed


class Metrics:
    """One app's Prometheus metrics, in a registry of its own (apps in one process do not collide)."""

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


class Guard:
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
                        raise TooLarge(limit)
                return message

            try:
                await self.app(scope, limited_receive, counted_send)
            except TooLarge as e:
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


class TooLarge(StarletteHTTPException):
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
