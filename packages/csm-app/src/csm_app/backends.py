"""Backends are found through the `csm.backends` entry-point group: installing one makes it available.

An entry point loads a backend class that describes itself (csm_core.protocols.BackendClass): its
weight formats (`quants`), how well it suits this machine (`preference()`), how to build it from
canonical weights (`build`), which converted files it opens (`file_layout`, `file_patterns`,
`recognizes`, `open_file`) and writes (`convert`), and a line for `csm info` (`describe`). This
module only loops over them: no backend is known here by name.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

__all__ = [
    "BackendError",
    "available_backends",
    "backend_class",
    "backend_classes",
    "known_quants",
    "check_quant",
    "pick_backend",
    "make_backend",
    "open_backend",
    "backend_for_layout",
]

GROUP = "csm.backends"
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


def backend_classes() -> dict[str, type]:
    """Every installed backend that imports, by name (one that fails to import is logged and left out)."""
    out = {}
    for name in sorted(available_backends()):
        try:
            out[name] = backend_class(name)
        except BackendError as e:
            logger.info("%s", e)
    return out


def known_quants() -> tuple[str, ...]:
    """Every weight format some installed backend builds, in the order they declare them."""
    seen: dict[str, None] = {}
    for cls in backend_classes().values():
        seen.update(dict.fromkeys(getattr(cls, "quants", ())))
    return tuple(seen)


def check_quant(quant: str | None, name: str | None = None) -> None:
    """quant must be one the named backend (or, without a name, any installed backend) builds."""
    if quant is None:
        return
    allowed = tuple(getattr(backend_class(name), "quants", ())) if name else known_quants()
    if quant not in allowed:
        where = f"the {name} backend" if name else "the installed backends"
        raise BackendError(f"unknown quant {quant!r} for {where}; expected one of {', '.join(allowed)}")


def backend_for_layout(layout: str | None):
    """(name, class) of the backend whose converted files have this layout, or None."""
    for name, cls in backend_classes().items():
        if layout and getattr(cls, "file_layout", None) == layout:
            return name, cls
    return None


def pick_backend(name: str = "auto", layout: str | None = None) -> str:
    """'auto' → the backend a converted file needs, else the installed backend with the highest
    `preference()` on this machine. A named backend is checked against what is installed."""
    owner = backend_for_layout(layout)
    if name != "auto":
        backend_class(name)  # validates
        if owner and owner[0] != name:
            raise BackendError(f"a {layout} model file runs on the {owner[0]} backend only, not {name!r}")
        return name
    if owner:
        return owner[0]
    if layout and layout not in ("original", "hf", "sesame"):
        raise BackendError(f"no installed backend opens {layout} model files")
    ranked = sorted(((cls.preference(), n) for n, cls in backend_classes().items() if hasattr(cls, "preference")),
                    reverse=True)  # fmt: skip
    ranked = [n for p, n in ranked if p >= 0]
    if ranked:
        return ranked[0]
    if available_backends():
        raise BackendError(f"no installed backend suits this machine ({', '.join(sorted(available_backends()))}): "
                           "name one with --backend")  # fmt: skip
    raise BackendError("no CSM backend is installed: pip install csm-cpu (or csm-mlx on Apple Silicon)")


def make_backend(name: str, config, weights, *, quant: str | None = None, threads: int | None = None, **options):
    """A FrameModel from canonical weights on backend `name` (`options`: backend-specific, e.g.
    the mlx backend's group_size)."""
    check_quant(quant, name)
    cls = backend_class(name)
    if hasattr(cls, "build"):
        return cls.build(config, weights, quant=quant, threads=threads, **options)
    # A backend without the contract: the common (config, weights, quant=, threads=) form.
    kwargs = {k: v for k, v in (("quant", quant), ("threads", threads)) if v is not None}
    return cls(config, weights, **kwargs)


def open_backend(name: str, files, *, quant: str | None = None, threads: int | None = None):
    """A FrameModel for the resolved model files (`discovery.ModelFiles`)."""
    owner = backend_for_layout(files.layout)
    if owner:
        if quant is not None:
            logger.warning("%s is already converted; --quant %s is ignored", files.weights, quant)
        return owner[1].open_file(files.weights, threads=threads)
    check_quant(quant, name)
    from csm_core.weights import load_csm_checkpoint

    config, weights = load_csm_checkpoint(files.weights)
    return make_backend(name, config, weights, quant=quant, threads=threads)
