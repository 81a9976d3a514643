"""csm-audio: the Mimi codec in numpy, audio I/O (soundfile) and resampling (soxr)."""

from .mimi import CheckpointError, Mimi, MimiStreamingDecoder

__version__ = "0.1.0"

__all__ = ["Mimi", "MimiStreamingDecoder", "CheckpointError"]
