"""The fuzz targets of tools/fuzz as property tests: each parser of outside data gets inputs made
by mutating its valid seeds, and must return a valid object or raise its documented error."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def scratch() -> Path:
    """Where the targets write each input (memory-backed where the machine has /dev/shm)."""
    shm = "/dev/shm" if Path("/dev/shm").is_dir() else None
    path = Path(tempfile.mkdtemp(prefix="csm-fuzz-test-", dir=shm))
    yield path
    shutil.rmtree(path, ignore_errors=True)
