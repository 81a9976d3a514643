"""Pause the cyclic garbage collector while building big vocabularies."""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def gc_paused() -> Iterator[None]:
    """Building ~10^6 small objects (dict entries, strings) triggers repeated GC passes that find
    nothing to free; pausing the collector cuts the JSON parse of a Llama-3 tokenizer.json by
    roughly a third (CPU time)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
