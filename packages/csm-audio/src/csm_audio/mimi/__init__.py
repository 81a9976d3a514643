"""Mimi codec in numpy (spec/mimi.md)."""

from .checkpoint import CheckpointError, canonical_weights, load_weights
from .model import Mimi, MimiStreamingDecoder, MimiStreamingEncoder

__all__ = ["Mimi", "MimiStreamingDecoder", "MimiStreamingEncoder", "CheckpointError", "canonical_weights", "load_weights"]
