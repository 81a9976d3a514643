"""csm-audio: the Mimi codec in numpy, audio I/O (soundfile) and resampling (soxr)."""

from .io import AudioFileError, WavStreamWriter, clip_audio, encode_audio, load_audio, read_audio, write_audio
from .mimi import CheckpointError, Mimi, MimiBatchStreamingDecoder, MimiStreamingDecoder, MimiStreamingEncoder
from .resample import resample, to_mono

__version__ = "0.1.0"

__all__ = [
    "Mimi",
    "MimiBatchStreamingDecoder",
    "MimiStreamingDecoder",
    "MimiStreamingEncoder",
    "CheckpointError",
    "AudioFileError",
    "read_audio",
    "load_audio",
    "write_audio",
    "encode_audio",
    "clip_audio",
    "WavStreamWriter",
    "resample",
    "to_mono",
]
