"""Mimi codec in numpy (spec/mimi.md)."""

from .checkpoint import CheckpointError, canonical_weights, load_weights
from .model import Mimi, MimiStreamingDecoder

__all__ = ["Mimi", "MimiStreamingDecoder", "CheckpointError", "canonical_weights", "load_weights"]
