"""Mimi codec in numpy (spec/mimi.md)."""

from .checkpoint import CheckpointError, canonical_weights, load_weights
from .model import Mimi, MimiBatchStreamingDecoder, MimiStreamingDecoder, MimiStreamingEncoder

__all__ = [
    "Mimi", "MimiBatchStreamingDecoder", "MimiStreamingDecoder", "MimiStreamingEncoder", "CheckpointError",
    "canonical_weights", "load_weights",
]
