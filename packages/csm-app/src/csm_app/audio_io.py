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
