"""Reading context audio and writing generated audio for the CLI (files, stdout, raw PCM)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from csm_audio.io import WavStreamWriter, clip_audio, encode_audio, load_audio, write_audio

__all__ = ["read_context_audio", "write_output", "pcm16"]


def read_context_audio(path: Path, sample_rate: int = 24_000) -> np.ndarray:
    """Any audio file → mono float32 at the codec rate."""
    return load_audio(path, sample_rate)


def pcm16(audio: np.ndarray) -> bytes:
    """Little-endian signed 16-bit samples, clipped first (no wrap-around)."""
    return (np.round(clip_audio(audio, "output audio") * 32767.0)).astype("<i2").tobytes()


def write_output(output: str, audio: np.ndarray, sample_rate: int, fmt: str) -> None:
    """Write audio to a file or to stdout ('-'): wav/flac/ogg/opus/mp3, or raw 16-bit 'pcm'."""
    if audio.size == 0:
        raise ValueError("no audio was generated (the model stopped at once); nothing to write")
    if output == "-":
        out = sys.stdout.buffer
        if fmt == "pcm":
            out.write(pcm16(audio))
        elif fmt == "wav":
            writer = WavStreamWriter(out, sample_rate)
            writer.write(audio)
            writer.close()
        else:
            out.write(encode_audio(audio, sample_rate, format=fmt))
        out.flush()
        return
    if fmt == "pcm":
        Path(output).write_bytes(pcm16(audio))
    else:
        write_audio(output, audio, sample_rate, format=fmt)
