"""The HTTP API's request bodies (pydantic: checked, and documented in the OpenAPI schema) and its
error shape, OpenAI's: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

from typing import Literal, Union

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ApiError", "error_response", "validation_error", "SpeechRequest", "VoiceRef", "VoiceTurn", "VoiceCreate",
           "MAX_INPUT_CHARS", "CONTENT_TYPES"]  # fmt: skip

MAX_INPUT_CHARS = 4096  # as OpenAI's endpoint
CONTENT_TYPES = {"mp3": "audio/mpeg", "opus": "audio/ogg; codecs=opus", "aac": "audio/aac", "flac": "audio/flac",
                 "wav": "audio/wav", "pcm": "audio/pcm"}  # fmt: skip
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
def validation_error(e: RequestValidationError) -> ApiError:
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


