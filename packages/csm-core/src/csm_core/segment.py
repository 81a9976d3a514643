"""A turn of a conversation: who spoke, what they said, and optionally how it sounded."""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral

import numpy as np

__all__ = ["Segment"]


@dataclass
class Segment:
    """speaker: a non-negative integer id; text: what was said; audio: optional mono float32
    at the codec's rate (24 kHz), or already-encoded Mimi codes [K, T] as ``codes``."""

    speaker: int
    text: str
    audio: np.ndarray | None = None
    codes: np.ndarray | None = None

    def __post_init__(self) -> None:
        if isinstance(self.speaker, bool) or not isinstance(self.speaker, Integral):
            raise TypeError(f"Segment.speaker must be an integer, got {type(self.speaker).__name__} {self.speaker!r}")
        if self.speaker < 0:
            raise ValueError(f"Segment.speaker must be >= 0, got {self.speaker}")
        self.speaker = int(self.speaker)
        if not isinstance(self.text, str):
            raise TypeError(f"Segment.text must be a str, got {type(self.text).__name__}")
        if self.audio is not None:
            a = np.asarray(self.audio)
            if a.ndim != 1:
                raise ValueError(f"Segment.audio must be 1-D mono samples, got shape {a.shape}")
            if a.size and not np.all(np.isfinite(a)):
                raise ValueError("Segment.audio contains NaN or infinite samples")
            self.audio = a.astype(np.float32, copy=False)
        if self.codes is not None:
            c = np.asarray(self.codes)
            if c.ndim != 2 or not np.issubdtype(c.dtype, np.integer):
                raise ValueError(f"Segment.codes must be an integer array [K, T], got {c.dtype} {c.shape}")
            self.codes = c
