"""Pause the cyclic garbage collector while building big vocabularies."""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def gc_paused() -> Iterator[None]:
    """Building ~10^6 small objects (dict entries, strings) would trigger repeated full GC passes
    that find nothing to free; pausing the collector makes loading about a third faster."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
