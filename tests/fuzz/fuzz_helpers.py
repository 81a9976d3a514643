"""The fuzz targets of tools/fuzz for the property tests, and their seeds (made once per session)."""

from __future__ import annotations

import sys
import tempfile
import tracemalloc
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools" / "fuzz"))
import targets  # noqa: E402

__all__ = ["targets", "seeds_of", "tracing", "peak_bytes"]

_SEEDS: dict[str, dict[str, bytes]] = {}


def seeds_of(name: str) -> dict[str, bytes]:
    if name not in _SEEDS:
        with tempfile.TemporaryDirectory() as tmp:
            _SEEDS[name] = targets.TARGETS[name].seeds(Path(tmp))
    return _SEEDS[name]


@contextmanager
def tracing():
    """tracemalloc on for the block (targets.bounded_check reads it), off after: it slows Python."""
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        yield
    finally:
        if started:
            tracemalloc.stop()


class peak_bytes:
    """Peak traced bytes (Python objects, numpy arrays) allocated inside the block."""

    def __enter__(self):
        self._tracing = tracing()
        self._tracing.__enter__()
        tracemalloc.reset_peak()
        self._base = tracemalloc.get_traced_memory()[0]
        return self

    def __exit__(self, *exc):
        self.peak = tracemalloc.get_traced_memory()[1] - self._base
        self._tracing.__exit__(*exc)
