"""The fuzz targets of tools/fuzz as property tests: each parser of outside data gets inputs made
by mutating its valid seeds, and must return a valid object or raise its documented error."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools" / "fuzz"))
import targets  # noqa: E402


@pytest.fixture(scope="session")
def scratch(tmp_path_factory) -> Path:
    """Where the targets write each input (memory-backed where the machine has /dev/shm)."""
    shm = "/dev/shm" if Path("/dev/shm").is_dir() else None
    path = Path(tempfile.mkdtemp(prefix="csm-fuzz-test-", dir=shm))
    yield path
    import shutil

    shutil.rmtree(path, ignore_errors=True)


_SEEDS: dict[str, dict[str, bytes]] = {}


def seeds_of(name: str) -> dict[str, bytes]:
    if name not in _SEEDS:
        with tempfile.TemporaryDirectory() as tmp:
            _SEEDS[name] = targets.TARGETS[name].seeds(Path(tmp))
    return _SEEDS[name]
