"""Backends are found through the `csm.backends` entry-point group: installing one makes it available.

Each backend has its own constructor; `make_backend` adapts the app's one vocabulary to it:
quant "f32" | "bf16" | "q8_0" | "q4_0" | "q4_k" (None: the backend's default) and threads.
- cpu: CpuBackend(config, weights, quant, threads=...) with the same quant names;
  a `.gguf` file → CpuBackend.from_gguf (its quant is fixed at conversion).
- mlx: MlxBackend(config, weights, dtype=..., quant_bits=..., group_size=...):
  f32 → float32, bf16 → bfloat16, q8_0 → 8-bit, q4_0 and q4_k → 4-bit affine groups over bfloat16;
  a file written by csm_mlx.convert → MlxBackend.load. MLX picks its own threads.
"""

from __future__ import annotations

import logging
import platform
import sys
from importlib.metadata import entry_points

__all__ = [
    "QUANTS",
    "BackendError",
    "available_backends",
    "backend_class",
    "pick_backend",
    "make_backend",
    "open_backend",
]

GROUP = "csm.backends"
QUANTS = ("f32", "bf16", "q8_0", "q4_0", "q4_k")
MLX_QUANT = {"f32": ("float32", None), "bf16": ("bfloat16", None), "q8_0": ("bfloat16", 8), "q4_0": ("bfloat16", 4),
             "q4_k": ("bfloat16", 4)}
logger = logging.getLogger(__name__)


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


def pick_backend(name: str = "auto", layout: str | None = None) -> str:
    """'auto' → the backend a converted file needs (gguf: cpu, mlx: mlx), else mlx on Apple Silicon
    macOS when installed, else cpu. A named backend is checked against what is installed."""
    needed = {"gguf": "cpu", "mlx": "mlx"}.get(layout or "")
    if name != "auto":
        if needed and name != needed:
            raise BackendError(f"a {layout} model file runs on the {needed} backend only, not {name!r}")
        backend_class(name)  # validates
        return name
    eps = available_backends()
    if needed:
        if needed not in eps:
            raise BackendError(f"a {layout} model file needs the {needed} backend: pip install csm-{needed}")
        return needed
    if sys.platform == "darwin" and platform.machine() == "arm64" and "mlx" in eps:
        return "mlx"
    if "cpu" in eps:
        return "cpu"
    if eps:
        return sorted(eps)[0]
    raise BackendError("no CSM backend is installed: pip install csm-cpu (or csm-mlx on Apple Silicon)")


def check_quant(quant: str | None) -> None:
    if quant is not None and quant not in QUANTS:
        raise BackendError(f"unknown quant {quant!r}; expected one of {', '.join(QUANTS)}")


def make_backend(name: str, config, weights, *, quant: str | None = None, threads: int | None = None, group_size: int = 64):
    """A FrameModel from canonical weights on backend `name`."""
    check_quant(quant)
    cls = backend_class(name)
    if name == "cpu":
        return cls(config, weights, quant or "f32", threads=threads)
    if name == "mlx":
        if threads is not None:
            logger.info("the mlx backend picks its own threads; --threads is ignored")
        dtype, bits = MLX_QUANT[quant or "f32"]
        return cls(config, weights, dtype=dtype, quant_bits=bits, group_size=group_size)
    # A third-party backend: the common (config, weights, quant=, threads=) form.
    kwargs = {k: v for k, v in (("quant", quant), ("threads", threads)) if v is not None}
    return cls(config, weights, **kwargs)


def open_backend(name: str, files, *, quant: str | None = None, threads: int | None = None):
    """A FrameModel for the resolved model files (`discovery.ModelFiles`)."""
    check_quant(quant)
    if files.layout in ("gguf", "mlx"):
        if quant is not None:
            logger.warning("%s is already converted; --quant %s is ignored", files.weights, quant)
        cls = backend_class(name)
        if files.layout == "gguf":
            return cls.from_gguf(files.weights, threads=threads)
        return cls.load(files.weights)
    from csm_core.weights import load_csm_checkpoint

    config, weights = load_csm_checkpoint(files.weights)
    return make_backend(name, config, weights, quant=quant, threads=threads)
