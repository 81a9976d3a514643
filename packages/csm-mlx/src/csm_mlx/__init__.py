"""csm-mlx: the CSM-1B model and the Mimi codec in MLX, conversion and 4/8-bit quantization."""

from __future__ import annotations

import importlib.util
import platform
import sys

__all__ = ["is_preferred", "is_available", "MlxBackend", "MlxMimi", "convert", "load_model"]

_LAZY = {
    "MlxBackend": ("backend", "MlxBackend"),
    "MlxMimi": ("mimi", "MlxMimi"),
    "convert": ("convert", "convert"),
    "load_model": ("convert", "load_model"),
}


def __getattr__(name: str):
    # Lazy: `import csm_mlx` (e.g. for is_preferred) must not import mlx itself.
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def is_available() -> bool:
    """True when the ``mlx`` package can be imported here (no import is done)."""
    return importlib.util.find_spec("mlx") is not None


def is_preferred() -> bool:
    """Whether ``auto`` should pick this backend: Apple Silicon macOS (Metal, unified memory) with mlx installed.

    On Linux, mlx[cpu] works but is slower than csm-cpu's kernels, so it is never preferred there.
    """
    return sys.platform == "darwin" and platform.machine() == "arm64" and is_available()
