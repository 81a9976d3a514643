"""csm-cpu: CPU backend for CSM-1B (Cython kernels with AVX2/NEON/portable paths, OpenMP)."""

import os

# Threads that wait at a barrier sleep instead of spinning: with another busy process on the
# machine a spinning waiter steals the core from the thread it waits for (measured: 20x slower
# frames under load). Set OMP_WAIT_POLICY=ACTIVE on a dedicated machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:
    from . import _engine, _kernels  # noqa: E402, F401  (compiled; loads the OpenMP runtime)
except ImportError as err:  # a source checkout whose extensions were never built, or a broken build
    raise ImportError(
        f"csm_cpu: its compiled kernels do not load from {os.path.dirname(__file__)} ({err}). "
        "In a source checkout build them with `python packages/csm-cpu/hatch_build.py` (or "
        "`pip install -e packages/csm-cpu`); otherwise reinstall csm-cpu."
    ) from err

from .features import cpu_features  # noqa: E402

__all__ = ["cpu_features"]
