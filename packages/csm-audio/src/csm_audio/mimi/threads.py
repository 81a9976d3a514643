"""The one helper thread of the numpy Mimi, and BLAS held to one thread while it works.

Streaming one frame multiplies 2 rows by ~150 MB of weights: bound by memory, not FLOPs. A helper
thread computing the second row while this thread computes the first reads each weight while it is
still in the shared L3 cache; the SEANet tail and whole clips split into streams (share_work). It
blocks on a queue between tasks (no spinning), and work it has not started by the time this thread
is done with its own is run here instead, so a busy second core costs little. BLAS runs on one
thread meanwhile (one_blas_thread).
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from typing import Any

try:
    from threadpoolctl import ThreadpoolController
except ImportError:  # optional: without it BLAS keeps its thread count and the helper stays off
    ThreadpoolController = None

__all__ = [
    "one_blas_thread", "pair_forced", "pair_default", "split_work", "share_work",
]

_BLAS: Any = None


def one_blas_thread():
    """BLAS on one thread within the block. For few-row streaming products (weight-streaming vector
    products gain nothing from a BLAS thread) and for work split over the helper thread: a spinning
    BLAS pool next to a second busy thread made a frame 4-10x slower on a loaded 2-core machine."""
    global _BLAS
    if ThreadpoolController is None:
        return contextlib.nullcontext()
    if _BLAS is None:
        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


class _Task:
    """fn, to be run by whichever thread takes `claim` first. The helper runs it with run(); the
    caller that did not run it waits with join()."""

    __slots__ = ("fn", "claim", "done", "error", "result")

    def __init__(self, fn):
        self.fn = fn
        self.claim = threading.Lock()  # taken by whichever thread runs fn
        self.done = threading.Lock()  # released by the helper when it has run fn
        self.done.acquire()
        self.error: BaseException | None = None
        self.result: Any = None

    def run(self) -> None:
        """On the helper: call fn, keeping its result or its error for the caller."""
        try:
            self.result = self.fn()
        except BaseException as e:  # handed to the caller
            self.error = e
        self.done.release()

    def join(self) -> Any:
        """On the caller: wait until the helper has run fn; its result, or its error raised here."""
        self.done.acquire()
        if self.error is not None:
            raise self.error
        return self.result


class _Helper:
    def __init__(self):
        self.pid = os.getpid()
        self.tasks: queue.SimpleQueue[_Task] = queue.SimpleQueue()
        threading.Thread(target=self._loop, name="csm-audio-helper", daemon=True).start()

    def _loop(self) -> None:
        while True:
            task = self.tasks.get()
            if task.claim.acquire(blocking=False):
                task.run()

    def split(self, mine, theirs) -> None:
        """Run theirs() on the helper and mine() here; both done on return."""
        task = _Task(theirs)
        self.tasks.put(task)
        mine()
        if task.claim.acquire(blocking=False):  # not started yet: cheaper to run it here
            theirs()
        else:
            task.join()


_HELPER: _Helper | None = None


def _helper() -> _Helper:
    global _HELPER
    if _HELPER is None or _HELPER.pid != os.getpid():  # threads do not survive fork
        _HELPER = _Helper()
    return _HELPER


def pair_forced() -> bool | None:
    """$CSM_AUDIO_PAIR: True (1) or False (0) when set, else None."""
    v = os.environ.get("CSM_AUDIO_PAIR", "").strip()
    return v == "1" if v in ("0", "1") else None


def pair_default() -> bool:
    """Whether streaming uses the helper thread: $CSM_AUDIO_PAIR (0/1), else on with >= 2 usable CPUs."""
    forced = pair_forced()
    if forced is not None:
        return forced
    if ThreadpoolController is None:
        return False
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return n >= 2


def split_work(mine, theirs) -> None:
    """Run mine() here and theirs() on the helper thread (or here, if the helper has not started it
    by the time mine() is done); both have run on return."""
    _helper().split(mine, theirs)


def share_work(pieces: list) -> list:
    """Call every piece (no-argument functions) and return their results in order: this thread takes
    pieces from the first on, the helper thread from the last back, each the next one not yet taken.
    So a helper slowed down by a busy machine only takes fewer pieces; pieces must not split their
    own work further (callers run them with paired=False)."""
    tasks = [_Task(piece) for piece in pieces]

    def helper_side() -> None:
        for task in reversed(tasks):
            if not task.claim.acquire(blocking=False):
                return  # this thread got here first: the rest are its
            task.run()

    _helper().tasks.put(_Task(helper_side))
    mine = 0
    while mine < len(tasks) and tasks[mine].claim.acquire(blocking=False):
        tasks[mine].result = tasks[mine].fn()
        mine += 1
    for task in tasks[mine:]:
        task.join()
    return [task.result for task in tasks]
