"""The one exception type for unreadable or mismatched checkpoints."""

from __future__ import annotations

__all__ = ["CheckpointError"]


class CheckpointError(ValueError):
    """A weight file or weight dict is not what the model needs.

    The message names the file (or source) and the tensor, with expected and found values.
    """
