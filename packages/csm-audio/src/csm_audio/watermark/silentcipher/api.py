"""The official generator's two steps: `embed` = Sesame's watermark() (resample to 44.1 kHz,
encode with message SDR 36 dB, resample back) and `verify` = Sesame's verify() (resample to
44.1 kHz, phase-shift decoding, compare with the key), plus `decode` for the raw answer and a
`csm_core.protocols.Watermarker` for the pipeline.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from csm_core.protocols import WatermarkResult

from .checkpoint import FILES, HOW_TO_GET, find_checkpoint_dir
from .model import Decoded, SilentCipher
from .sinc_resample import sinc_resample

__all__ = ["CSM_1B_KEY", "EMBED_SDR_DB", "embed", "decode", "verify", "load", "SilentCipherWatermarker",
           "SilentCipherNotFound"]

CSM_1B_KEY = bytes([212, 211, 146, 56, 201])  # public, "not secure" per the Sesame source
EMBED_SDR_DB = 36.0  # the official generator's message SDR (the model default is 47)


class SilentCipherNotFound(FileNotFoundError):
    """The SilentCipher checkpoint files are not where they were looked for."""


def load(path: str | Path | None = None, cache: str | Path | None = None) -> SilentCipher:
    """The model from a directory holding the files, a snapshot of sony/silentcipher, or a hub
    cache (see find_checkpoint_dir). Raises SilentCipherNotFound listing the places looked at."""
    found, looked = find_checkpoint_dir(path, cache)
    if found is None:
        where = "\n  ".join(looked) or "(no path or cache given)"
        raise SilentCipherNotFound(f"SilentCipher weights ({', '.join(FILES)}) not found; looked in:\n  {where}\n{HOW_TO_GET}")
    return SilentCipher.load(found)


def _key(key) -> bytes:
    if isinstance(key, str):
        key = key.encode()
    try:
        b = bytes(key)
    except (TypeError, ValueError):
        raise ValueError(f"SilentCipher key must be bytes or integers 0..255, got {key!r}") from None
    if len(b) != 5:
        raise ValueError(f"SilentCipher key must be 5 bytes (40 bits), got {len(b)}")
    return b


def _audio(audio, sample_rate, what: str) -> np.ndarray:
    a = np.asarray(audio)
    if a.ndim != 1:
        raise ValueError(f"{what}: audio must be 1-D (mono) samples, got shape {a.shape}; mix channels down first")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{what}: audio must be a float or integer array, got dtype {a.dtype}")
    if isinstance(sample_rate, bool) or not (isinstance(sample_rate, (int, np.integer)) and sample_rate > 0):
        raise ValueError(f"{what}: sample_rate must be a positive integer (Hz), got {sample_rate!r}")
    if sample_rate < 8000:
        raise ValueError(f"{what}: sample_rate {sample_rate} Hz is below 8000 Hz; the mark lives up to ~11 kHz")
    if np.issubdtype(a.dtype, np.integer):
        a = a.astype(np.float64) / float(np.iinfo(a.dtype).max + 1)
    a = a.astype(np.float32)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{what}: audio contains NaN or infinite samples")
    return a


def embed(audio, sample_rate: int, key=CSM_1B_KEY, model: SilentCipher | None = None,
          message_sdr: float = EMBED_SDR_DB, allow_short: bool = False) -> np.ndarray:
    """Mark audio as the official generator does; float32 at sample_rate out, same length.

    Resampling is torchaudio's (the official one): to the model's 44.1 kHz and back. Input above
    44.1 kHz comes back resampled to its own rate (the official returns 44.1 kHz there). Clips
    too short to carry one whole message (about 0.84 s) are refused unless allow_short (the
    official generator marks them anyway; no decoder can read them back)."""
    if model is None:
        raise ValueError("SilentCipher embed: no model given; load one with csm_audio.watermark.silentcipher.load(path)")
    x = _audio(audio, sample_rate, "SilentCipher embed")
    k = _key(key)
    sr = model.sample_rate
    y = sinc_resample(x, sample_rate, sr)
    if len(y) < model.min_samples() and not allow_short:
        raise ValueError(f"SilentCipher embed: clip too short to carry the message: {len(x)} samples at {sample_rate} Hz "
                         f"({len(y)} at {sr} Hz), need at least {model.min_samples()} at {sr} Hz")
    marked = model.encode(y, k, message_sdr)
    out = sinc_resample(marked, sr, min(sr, sample_rate))
    if sample_rate > sr:
        out = sinc_resample(out, sr, sample_rate)
    out = out[: len(x)]
    return np.pad(out, (0, len(x) - len(out))) if len(out) < len(x) else out


def decode(audio, sample_rate: int, model: SilentCipher, phase_shift_decoding: bool = True) -> Decoded:
    """The official decode_wav answer (after resampling to 44.1 kHz)."""
    x = _audio(audio, sample_rate, "SilentCipher decode")
    return model.decode(sinc_resample(x, sample_rate, model.sample_rate), phase_shift_decoding)


def verify(audio, sample_rate: int, key=CSM_1B_KEY, model: SilentCipher | None = None) -> WatermarkResult:
    """found iff the decoded message equals key exactly (all 40 bits), as the official verify().
    payload: the decoded 5 bytes as an integer (big-endian) when a message was read; score: the
    decoder's confidence; reason: why nothing was found."""
    if model is None:
        raise ValueError("SilentCipher verify: no model given; load one with csm_audio.watermark.silentcipher.load(path)")
    k = _key(key)
    d = decode(audio, sample_rate, model, phase_shift_decoding=True)
    details = {"mark": "silentcipher", "phase_shift": d.phase_shift, "offsets_tried": d.offsets_tried,
               "messages": d.messages, "confidences": d.confidences}
    if not d.status:
        return WatermarkResult(False, None, 0.0, reason=d.reason, details=details)
    msg = d.messages[0]
    payload = int.from_bytes(bytes(msg), "big") if all(0 <= v < 256 for v in msg) and len(msg) == 5 else None
    found = msg == list(k)
    reason = "" if found else f"decoded message {msg} is not the key {list(k)}"
    return WatermarkResult(found, payload, float(d.confidences[0]), reason=reason, details=details)


class SilentCipherWatermarker:
    """csm_core.protocols.Watermarker over SilentCipher with the official key and SDR.

    SilentCipher normalises over the whole clip (utterance-level scaling and batch statistics),
    so a clip must be marked whole: start_sample is accepted for the protocol but a streamed
    chunk is marked on its own (it carries the message alone if it is long enough). Like the
    official generator, clips too short to carry a whole message are marked all the same."""

    name = "silentcipher"
    whole_clip = True  # marks a whole utterance: a stream is marked once it has ended

    def __init__(self, model: SilentCipher, key=CSM_1B_KEY):
        self.model, self.key = model, _key(key)

    def embed(self, audio: np.ndarray, sample_rate: int, start_sample: int = 0) -> np.ndarray:
        return embed(audio, sample_rate, self.key, self.model, allow_short=True)

    def detect(self, audio: np.ndarray, sample_rate: int) -> WatermarkResult:
        return verify(audio, sample_rate, self.key, self.model)
