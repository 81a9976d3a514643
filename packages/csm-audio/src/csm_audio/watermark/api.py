"""Public entry points: embed / detect with a key and payload, and the pipeline Watermarker."""

from __future__ import annotations

import numpy as np
import soxr

from csm_core.protocols import WatermarkResult

from .layout import CSM_PUBLIC_KEY, PatchworkParams, cell_layout, default_payload, key_bytes
from .patchwork import decode_cells, false_positive_bound, search, watermark_signal

DEFAULT_PARAMS = PatchworkParams()
DEFAULT_KEY = CSM_PUBLIC_KEY
DEFAULT_PAYLOAD = default_payload(CSM_PUBLIC_KEY)  # 0xD4D39238


def _check_audio(audio: np.ndarray, sample_rate: int, what: str) -> np.ndarray:
    a = np.asarray(audio)
    if a.ndim != 1:
        raise ValueError(f"{what}: audio must be 1-D (mono) samples, got shape {a.shape}; mix channels down first")
    if not np.issubdtype(a.dtype, np.floating) and not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{what}: audio must be a float or integer array, got dtype {a.dtype}")
    if not (isinstance(sample_rate, (int, np.integer)) and sample_rate > 0):
        raise ValueError(f"{what}: sample_rate must be a positive integer, got {sample_rate!r}")
    if np.issubdtype(a.dtype, np.integer):
        a = a.astype(np.float64) / float(np.iinfo(a.dtype).max + 1)
    a = a.astype(np.float64, copy=False)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{what}: audio contains NaN or infinite samples")
    return a


def _resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    if sr_in == sr_out or len(x) == 0:
        return x
    return soxr.resample(x, sr_in, sr_out, quality="HQ")


def embed(
    audio: np.ndarray,
    sample_rate: int,
    key: bytes | str | list[int] = DEFAULT_KEY,
    payload: int = DEFAULT_PAYLOAD,
    params: PatchworkParams = DEFAULT_PARAMS,
    start_sample: int = 0,
) -> np.ndarray:
    """Return audio (same length, rate and float dtype; float32 for integer input) carrying a
    32-bit payload under key. Other rates are marked at 24 kHz and the mark is resampled back;
    the host itself is never resampled. The mark never pushes a sample past max(1, peak).

    start_sample: position of audio[0] within a longer stream (at sample_rate). Marking a stream
    chunk by chunk with each chunk's position keeps one block grid, so the joined stream is
    detected like a whole-clip mark (chunk edges cost a little strength; chunks of a few
    hundred ms or more are best)."""
    x = _check_audio(audio, sample_rate, "watermark embed")
    if not (isinstance(start_sample, (int, np.integer)) and start_sample >= 0):
        raise ValueError(f"watermark embed: start_sample must be an integer >= 0, got {start_sample!r}")
    layout = cell_layout(key_bytes(key), params)
    x24 = _resample(x, sample_rate, params.sample_rate)
    start24 = int(round(int(start_sample) * params.sample_rate / sample_rate))
    w = watermark_signal(x24, layout, int(payload), params, start24)
    w = _resample(w, params.sample_rate, sample_rate)[: len(x)]
    w = np.pad(w, (0, len(x) - len(w)))
    limit = max(1.0, float(np.max(np.abs(x), initial=0.0)))
    y = np.clip(x + w, -limit, limit)  # only the mark is limited: |x| <= limit already
    in_dtype = np.asarray(audio).dtype
    out_dtype = in_dtype if np.issubdtype(in_dtype, np.floating) else np.float32
    return y.astype(out_dtype)


def detect(
    audio: np.ndarray,
    sample_rate: int,
    key: bytes | str | list[int] = DEFAULT_KEY,
    params: PatchworkParams = DEFAULT_PARAMS,
) -> WatermarkResult:
    """Look for the mark made with key. found is true only if a sync hypothesis reaches the
    threshold and its decoded payload passes the CRC; score is that hypothesis' sync z-score
    (the best one seen when nothing is found). details carry offset, phase, threshold and the
    per-clip false-positive bound."""
    x = _check_audio(audio, sample_rate, "watermark detect")
    layout = cell_layout(key_bytes(key), params)
    x = _resample(x, sample_rate, params.sample_rate)
    details = {"threshold": params.sync_threshold, "fp_bound": false_positive_bound(params)}
    if len(x) < params.min_samples:
        return WatermarkResult(
            False, None, 0.0,
            reason=f"clip too short: {len(x)} samples at {params.sample_rate} Hz, need {params.min_samples} (one sync block)",
            details=details,
        )
    if not np.any(x):
        return WatermarkResult(False, None, 0.0, reason="clip is silent", details=details)
    candidates = search(x, layout, params)
    for cand in candidates:
        if cand.z < params.sync_threshold:
            break
        payload = decode_cells(cand.cells, layout)
        if payload is not None:
            details.update(offset=cand.offset, phase=cand.phase)
            return WatermarkResult(True, payload, cand.z, reason="", details=details)
    best = candidates[0]
    reason = "no sync above threshold" if best.z < params.sync_threshold else "sync found but no payload passed the CRC"
    details.update(offset=best.offset, phase=best.phase)
    return WatermarkResult(False, None, best.z, reason=reason, details=details)


class PatchworkWatermarker:
    """csm_core.protocols.Watermarker over the keyed patchwork mark, with the CSM defaults.

    Not SilentCipher: SilentCipher detectors (and Sesame's verify) will not see this mark,
    and this detector does not see SilentCipher's."""

    def __init__(self, key: bytes | str | list[int] = DEFAULT_KEY, payload: int | None = None,
                 params: PatchworkParams = DEFAULT_PARAMS) -> None:
        self.key = key_bytes(key)
        self.payload = default_payload(self.key) if payload is None else int(payload)
        self.params = params

    def embed(self, audio: np.ndarray, sample_rate: int, start_sample: int = 0) -> np.ndarray:
        """Mark audio; start_sample places a streamed chunk in its stream (see embed)."""
        return embed(audio, sample_rate, self.key, self.payload, self.params, start_sample)

    def detect(self, audio: np.ndarray, sample_rate: int) -> WatermarkResult:
        return detect(audio, sample_rate, self.key, self.params)
