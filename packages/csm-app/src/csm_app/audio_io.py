"""Reading context audio and writing generated audio for the CLI (files, stdout, raw PCM)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from csm_audio.io import WavStreamWriter, clip_audio, encode_audio, load_audio, write_audio

__all__ = ["FORMATS", "read_context_audio", "write_output", "pcm16", "AudioSink"]

FORMATS = ("wav", "flac", "ogg", "opus", "mp3", "pcm")


def read_context_audio(path: Path, sample_rate: int = 24_000) -> np.ndarray:
    """Any audio file → mono float32 at the codec rate."""
    return load_audio(path, sample_rate)


def pcm16(audio: np.ndarray) -> bytes:
    """Little-endian signed 16-bit samples, clipped first (no wrap-around)."""
    return (np.round(clip_audio(audio, "output audio") * 32767.0)).astype("<i2").tobytes()


def write_output(output: str, audio: np.ndarray, sample_rate: int, fmt: str) -> None:
    """Write audio to a file or to stdout ('-'): wav/flac/ogg/opus/mp3, or raw 16-bit 'pcm'."""
    sink = AudioSink(output, sample_rate, fmt, stream=False)
    sink.write(audio)
    sink.close()


class AudioSink:
    """Where `csm say` puts audio. To stdout as wav (16-bit, header sizes unknown) or raw pcm,
    chunks are written as they arrive so a player on the pipe starts at once; files and other
    formats get the whole clip at close."""

    def __init__(self, output: str, sample_rate: int, fmt: str, *, stream: bool = True):
        if fmt not in FORMATS:
            raise ValueError(f"unknown audio format {fmt!r}; choose one of {', '.join(FORMATS)}")
        self.output, self.rate, self.fmt = output, int(sample_rate), fmt
        self.streaming = stream and output == "-" and fmt in ("wav", "pcm")
        self.samples = 0
        self._chunks: list[np.ndarray] = []
        self._wav: WavStreamWriter | None = None

    def write(self, chunk: np.ndarray) -> None:
        chunk = np.asarray(chunk, np.float32)
        if chunk.size == 0:
            return
        self.samples += chunk.size
        if not self.streaming:
            self._chunks.append(chunk)
            return
        out = sys.stdout.buffer
        if self.fmt == "pcm":
            out.write(pcm16(chunk))
        else:
            if self._wav is None:
                self._wav = WavStreamWriter(out, self.rate)
            self._wav.write(chunk)
        out.flush()

    def close(self) -> None:
        if self.samples == 0:
            raise ValueError("no audio was generated (the model stopped at once); nothing to write")
        if self.streaming:
            if self._wav is not None:
                self._wav.close()
            return
        audio = np.concatenate(self._chunks)
        if self.output == "-":
            out = sys.stdout.buffer
            out.write(pcm16(audio) if self.fmt == "pcm" else encode_audio(audio, self.rate, format=self.fmt))
            out.flush()
        elif self.fmt == "pcm":
            Path(self.output).write_bytes(pcm16(audio))
        else:
            write_audio(self.output, audio, self.rate, format=self.fmt)


# ---- what the server answers in: OpenAI's response formats ----
RESPONSE_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
STREAMED_FORMATS = ("pcm", "wav")  # sent chunk by chunk as frames are decoded; the others whole
_SOUNDFILE = {"mp3": ("MP3", "MPEG_LAYER_III", "libsndfile >= 1.1 with LAME/mpg123 (soundfile >= 0.12 wheels bundle it)"),
              "opus": ("OGG", "OPUS", "libsndfile >= 1.0.29 built with libopus (soundfile's wheels bundle it)"),
              "flac": ("FLAC", "PCM_16", "libsndfile built with FLAC (soundfile's wheels bundle it)")}  # fmt: skip


class FormatUnavailable(ValueError):
    """This installation cannot encode the format; the message says what would enable it."""


def check_response_format(fmt: str) -> None:
    """Raise FormatUnavailable when `fmt` (one of RESPONSE_FORMATS) cannot be encoded here."""
    import importlib.util

    import soundfile as sf

    if fmt in ("wav", "pcm"):
        return
    if fmt == "aac":
        if importlib.util.find_spec("av") is None:
            raise FormatUnavailable("response_format 'aac' cannot be encoded here: libsndfile has no AAC encoder; "
                                    "install PyAV (pip install av, FFmpeg's AAC encoder) to enable it")  # fmt: skip
        return
    container, subtype, needs = _SOUNDFILE[fmt]
    if subtype not in sf.available_subtypes(container):
        raise FormatUnavailable(f"response_format {fmt!r} cannot be encoded here: the installed libsndfile "
                                f"({sf.__libsndfile_version__}) lacks {container}/{subtype}; it needs {needs}")  # fmt: skip


def encode_response(audio: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """A whole clip as the bytes of one response: pcm (16-bit LE mono), wav, flac, mp3, opus (Ogg),
    aac (ADTS, through PyAV)."""
    check_response_format(fmt)
    if fmt == "pcm":
        return pcm16(audio)
    if fmt == "aac":
        return _encode_aac(audio, sample_rate)
    return encode_audio(audio, sample_rate, format=fmt)


def _encode_aac(audio: np.ndarray, sample_rate: int) -> bytes:
    import io

    import av

    samples = np.round(clip_audio(audio, "output audio") * 32767.0).astype(np.int16)[None, :]
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="adts") as out:
        stream = out.add_stream("aac", rate=sample_rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = sample_rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


class WavChunks:
    """A streamed 16-bit WAV as byte strings: the header (sizes unknown) comes with the first chunk."""

    def __init__(self, sample_rate: int):
        self._parts: list[bytes] = []
        self._writer = WavStreamWriter(self, sample_rate)

    def write(self, data: bytes) -> None:  # the writer's file
        self._parts.append(bytes(data))

    def flush(self) -> None:
        pass

    def encode(self, chunk: np.ndarray) -> bytes:
        self._writer.write(chunk)
        out, self._parts = b"".join(self._parts), []
        return out
