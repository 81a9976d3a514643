"""Which kernel path runs: detected at import, overridable with CSM_CPU_ISA for tests."""

from __future__ import annotations

import os
import platform

from . import _kernels

__all__ = ["cpu_features", "active_isa", "ISA_BY_NAME"]

ISA_BY_NAME = {name: code for code, name in _kernels.ISA_NAMES.items()}


def _select() -> tuple[int, str | None]:
    """(path code, env value that forced it or None)."""
    forced = os.environ.get("CSM_CPU_ISA", "").strip().lower()
    detected = _kernels.detected_isa()
    if forced in ("", "auto"):
        return detected, None
    if forced not in ISA_BY_NAME:
        raise ValueError(f"CSM_CPU_ISA={forced!r}: expected one of auto, {', '.join(ISA_BY_NAME)}")
    code = ISA_BY_NAME[forced]
    if code not in (ISA_BY_NAME["portable"], detected):
        raise RuntimeError(
            f"CSM_CPU_ISA={forced!r}: this CPU/build supports only "
            f"{', '.join(sorted({'portable', _kernels.ISA_NAMES[detected]}))}"
        )
    return code, forced


_ACTIVE, _FORCED = _select()
_kernels.set_isa(_ACTIVE)


def active_isa() -> int:
    """Code of the path the kernels run (0 portable, 1 avx2, 2 neon)."""
    return _ACTIVE


def cpu_features() -> dict:
    """What was detected on this CPU and which kernel path runs."""
    compiled = _kernels.compiled_isas()
    return {
        "machine": platform.machine(),
        "detected": _kernels.ISA_NAMES[_kernels.detected_isa()],
        "active": _kernels.ISA_NAMES[_ACTIVE],
        "forced_by_env": _FORCED,
        "compiled": [name for code, name in _kernels.ISA_NAMES.items() if (compiled >> code) & 1],
        "openmp": _kernels.openmp_enabled(),
        "max_threads": _kernels.omp_max_threads(),
    }
