"""The fuzz targets of tools/fuzz for the property tests, and their seeds (made once per session)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools" / "fuzz"))
import targets  # noqa: E402

__all__ = ["targets", "seeds_of"]

_SEEDS: dict[str, dict[str, bytes]] = {}


def seeds_of(name: str) -> dict[str, bytes]:
    if name not in _SEEDS:
        with tempfile.TemporaryDirectory() as tmp:
            _SEEDS[name] = targets.TARGETS[name].seeds(Path(tmp))
    return _SEEDS[name]
