"""csm-cpu: CPU backend for CSM-1B (Cython kernels with AVX2/NEON/portable paths, OpenMP)."""

import os

# Threads that wait at a barrier sleep instead of spinning: with another busy process on the
# machine a spinning waiter steals the core from the thread it waits for (measured: 20x slower
# frames under load). Set OMP_WAIT_POLICY=ACTIVE on a dedicated machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .features import cpu_features  # noqa: E402  (loads the OpenMP runtime)

__all__ = ["cpu_features"]
