"""Backends are found through the `csm.backends` entry-point group: installing one makes it available."""

from __future__ import annotations

import platform
import sys
from importlib.metadata import entry_points

__all__ = ["available_backends", "backend_class", "pick_backend", "BackendError"]

GROUP = "csm.backends"


class BackendError(ValueError):
    pass


def available_backends() -> dict[str, object]:
    """name → entry point (not loaded)."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def backend_class(name: str):
    eps = available_backends()
    if name not in eps:
        known = ", ".join(sorted(eps)) or "none installed"
        raise BackendError(f"unknown backend {name!r} (available: {known})")
    try:
        return eps[name].load()
    except ImportError as e:
        raise BackendError(f"backend {name!r} is installed but cannot be imported: {e}") from e


def pick_backend(name: str = "auto") -> str:
    """'auto' → mlx on Apple Silicon macOS when installed, else cpu."""
    if name != "auto":
        backend_class(name)  # validates
        return name
    eps = available_backends()
    if sys.platform == "darwin" and platform.machine() == "arm64" and "mlx" in eps:
        return "mlx"
    if "cpu" in eps:
        return "cpu"
    if eps:
        return sorted(eps)[0]
    raise BackendError("no CSM backend is installed: pip install csm-cpu (or csm-mlx on Apple Silicon)")
