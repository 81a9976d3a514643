"""Audio files in and out (soundfile / libsndfile): wav, flac, ogg (vorbis), opus, mp3.

- read_audio(src) -> (float32 [frames, channels], rate); load_audio(src) -> 24 kHz mono float32,
  any input rate and channel count. `src` is a path, bytes, or a binary file object.
- write_audio(dst, audio, rate): format from the extension (or `format=` for file objects);
  samples are clipped to [-1, 1] first, so integer formats never wrap around.
- WavStreamWriter: 16-bit PCM WAV for pipes and sockets, written chunk by chunk.
"""

from __future__ import annotations

import io
import logging
import os
import struct
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
import soundfile as sf

from .resample import resample, to_mono

__all__ = [
    "AudioFileError",
    "read_audio",
    "load_audio",
    "write_audio",
    "encode_audio",
    "WavStreamWriter",
    "FORMATS",
    "clip_audio",
    "MAX_DECODED_SAMPLES",
    "MIN_SAMPLE_RATE",
]

log = logging.getLogger(__name__)

Source = Union[str, os.PathLike, bytes, bytearray, BinaryIO]

# extension -> (soundfile format, default subtype)
FORMATS: dict[str, tuple[str, str]] = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "opus": ("OGG", "OPUS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
}
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
# Bounds on what a file may make us allocate (a header's claims are not trusted): 2^28 decoded
# samples (1 GiB of float32: 46 minutes of 48 kHz stereo), 64 channels, and load_audio's input
# rate of at least 4 kHz (at most 6x growth to 24 kHz).
MAX_DECODED_SAMPLES = 1 << 28
MAX_CHANNELS = 64
MIN_SAMPLE_RATE = 4000


class AudioFileError(ValueError):
    """An audio file cannot be read or written (missing, corrupt, unsupported)."""


def _name(src: Source) -> str:
    if isinstance(src, (str, os.PathLike)):
        return str(src)
    return "<in-memory audio>"


def read_audio(src: Source) -> tuple[np.ndarray, int]:
    """Decode an audio file: (float32 [frames, channels], sample rate)."""
    name = _name(src)
    if isinstance(src, (str, os.PathLike)) and not Path(src).is_file():  # a device or pipe could block
        raise AudioFileError(f"{name}: " + ("not a regular file" if Path(src).exists() else "file not found"))
    f = io.BytesIO(bytes(src)) if isinstance(src, (bytes, bytearray)) else src
    try:
        with sf.SoundFile(f) as snd:
            rate, channels = int(snd.samplerate), int(snd.channels)
            if not 1 <= channels <= MAX_CHANNELS or rate < 1:
                raise AudioFileError(f"{name}: {channels} channels at {rate} Hz; expected 1 to {MAX_CHANNELS} channels")
            data = _read_blocks(snd, channels, name)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        if isinstance(e, AudioFileError):
            raise
        raise AudioFileError(f"{name}: cannot decode audio ({e}); supported: {', '.join(FORMATS)}") from None
    if not np.all(np.isfinite(data)):
        raise AudioFileError(f"{name}: decoded samples hold NaN or inf values")
    return data, rate


def _read_blocks(snd: sf.SoundFile, channels: int, name: str) -> np.ndarray:
    """Decode block by block: the frame count a header claims is not trusted (a FLAC header
    can claim 2^36 frames; soundfile would allocate all of them up front)."""
    frames = max(1, (1 << 20) // channels)
    blocks, total = [], 0
    while True:
        block = snd.read(frames, dtype="float32", always_2d=True)
        if block.shape[0] == 0:
            break
        total += block.size
        if total > MAX_DECODED_SAMPLES:
            raise AudioFileError(f"{name}: decodes to more than {MAX_DECODED_SAMPLES:,} samples; split it first")
        blocks.append(block)
    return np.concatenate(blocks) if blocks else np.zeros((0, channels), np.float32)


def load_audio(src: Source, sample_rate: int = 24_000) -> np.ndarray:
    """Any file -> mono float32 [frames] at `sample_rate` (channels averaged, then soxr).
    Input rates below MIN_SAMPLE_RATE are refused: resampling them up would multiply the size."""
    data, rate = read_audio(src)
    if data.shape[0] == 0:
        raise AudioFileError(f"{_name(src)}: the file holds no audio samples")
    if rate < MIN_SAMPLE_RATE:
        raise AudioFileError(f"{_name(src)}: sample rate {rate} Hz is below {MIN_SAMPLE_RATE} Hz; not speech audio")
    return resample(to_mono(data), rate, sample_rate)


def clip_audio(audio: np.ndarray, what: str = "audio") -> np.ndarray:
    """float32 copy clipped to [-1, 1]; NaN/inf rejected; a log warning when samples were clipped."""
    a = np.asarray(audio, np.float32)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{what} holds NaN or inf samples; refusing to write it")
    n = int(np.count_nonzero(np.abs(a) > 1.0))
    if n:
        log.warning("%s: %d samples beyond [-1, 1] were clipped (peak %.3f)", what, n, float(np.abs(a).max()))
    return np.clip(a, -1.0, 1.0)


def _format_for(dst: Source, format: str | None) -> tuple[str, str]:
    key = (format or (Path(dst).suffix[1:] if isinstance(dst, (str, os.PathLike)) else "")).lower()
    if key not in FORMATS:
        where = f"format {format!r}" if format else f"extension of {_name(dst)!r}"
        raise AudioFileError(f"unsupported output {where}; choose one of {', '.join(FORMATS)}")
    return FORMATS[key]


def write_audio(
    dst: Source, audio: np.ndarray, sample_rate: int, *, format: str | None = None, subtype: str | None = None
) -> None:
    """Write [frames] or [frames, channels] float audio. Format from the extension, or `format`
    ('wav', 'flac', 'ogg', 'opus', 'mp3') for file objects. Opus needs 8/12/16/24/48 kHz."""
    sf_format, default_subtype = _format_for(dst, format)
    if sf_format == "OGG" and default_subtype == "OPUS" and sample_rate not in _OPUS_RATES:
        raise AudioFileError(f"opus supports sample rates {_OPUS_RATES}, got {sample_rate}; resample first")
    a = clip_audio(audio, _name(dst))
    if a.ndim not in (1, 2) or a.shape[0] == 0:
        raise ValueError(f"audio to write must be non-empty [frames] or [frames, channels], got shape {a.shape}")
    try:
        sf.write(dst, a, int(sample_rate), format=sf_format, subtype=subtype or default_subtype)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise AudioFileError(f"{_name(dst)}: cannot write {sf_format}/{subtype or default_subtype} ({e})") from None


def encode_audio(audio: np.ndarray, sample_rate: int, format: str = "wav", subtype: str | None = None) -> bytes:
    """The bytes of an audio file in memory (for HTTP responses and the like)."""
    buf = io.BytesIO()
    write_audio(buf, audio, sample_rate, format=format, subtype=subtype)
    return buf.getvalue()


class WavStreamWriter:
    """16-bit PCM WAV written as chunks arrive, to a file object that may not seek (a pipe).

    The header declares the largest size (as streaming servers do); on close, a seekable file
    gets the true sizes patched in. Samples are clipped to [-1, 1] before conversion.
    """

    _UNKNOWN = 0xFFFFFFFF

    def __init__(self, fileobj: BinaryIO, sample_rate: int, channels: int = 1):
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.f, self.rate, self.channels = fileobj, int(sample_rate), int(channels)
        self.frames = 0
        self._closed = False
        self.f.write(self._header(None))

    def _header(self, data_bytes: int | None) -> bytes:
        size = self._UNKNOWN if data_bytes is None else data_bytes
        riff = self._UNKNOWN if data_bytes is None else 36 + data_bytes
        block = 2 * self.channels
        return (
            b"RIFF" + struct.pack("<I", riff) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, self.channels, self.rate, self.rate * block, block, 16)
            + b"data" + struct.pack("<I", size)
        )

    def write(self, audio: np.ndarray) -> None:
        """Append [frames] (mono) or [frames, channels] float samples."""
        if self._closed:
            raise ValueError("WavStreamWriter is closed")
        a = clip_audio(audio, "streamed audio")
        if a.ndim == 1:
            a = a[:, None]
        if a.ndim != 2 or a.shape[1] != self.channels:
            raise ValueError(f"expected [frames] or [frames, {self.channels}] samples, got shape {a.shape}")
        pcm = np.round(a * 32767.0).astype("<i2")
        self.f.write(pcm.tobytes())
        self.frames += a.shape[0]

    def close(self) -> None:
        """Patch the true sizes in when the file can seek; flush either way. Idempotent."""
        if self._closed:
            return
        self._closed = True
        data_bytes = self.frames * 2 * self.channels
        try:
            seekable = self.f.seekable()
        except (AttributeError, OSError):
            seekable = False
        if seekable and data_bytes <= self._UNKNOWN - 36:
            end = self.f.tell()
            self.f.seek(end - data_bytes - 44)
            self.f.write(self._header(data_bytes))
            self.f.seek(end)
        self.f.flush()

    def __enter__(self) -> "WavStreamWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
