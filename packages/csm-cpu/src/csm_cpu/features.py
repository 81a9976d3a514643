"""Which kernel path runs: detected at import, overridable with CSM_CPU_ISA (A/B runs, tests).

Paths: portable (plain C, everywhere), avx2 (AVX2+FMA+F16C), avx512 (AVX-512 F/BW/VL + VNNI for
the decode products, the avx2 kernels for the rest; bit-identical results to avx2), neon.
CSM_CPU_ISA may name any path this CPU runs: on an AVX-512 machine avx2 and portable as well.
"""

from __future__ import annotations

import contextlib
import os
import platform

from . import _kernels

__all__ = ["cpu_features", "active_isa", "supported_isas", "isa_override", "uses_repacked", "ISA_BY_NAME"]

ISA_BY_NAME = {name: code for code, name in _kernels.ISA_NAMES.items()}
_FALLBACK = {"avx512": ("avx2",)}  # paths a CPU that runs the key also runs


def supported_isas() -> list[str]:
    """Names of the paths this CPU and build can run, best first."""
    detected = _kernels.ISA_NAMES[_kernels.detected_isa()]
    names = [detected, *_FALLBACK.get(detected, ()), "portable"]
    return list(dict.fromkeys(names))


def _select() -> tuple[int, str | None]:
    """(path code, env value that forced it or None)."""
    forced = os.environ.get("CSM_CPU_ISA", "").strip().lower()
    detected = _kernels.detected_isa()
    if forced in ("", "auto"):
        return detected, None
    if forced not in ISA_BY_NAME:
        raise ValueError(f"CSM_CPU_ISA={forced!r}: expected one of auto, {', '.join(ISA_BY_NAME)}")
    if forced not in supported_isas():
        raise RuntimeError(f"CSM_CPU_ISA={forced!r}: this CPU/build supports only {', '.join(supported_isas())}")
    return ISA_BY_NAME[forced], forced


_ACTIVE, _FORCED = _select()
_kernels.set_isa(_ACTIVE)


def active_isa() -> int:
    """Code of the path the kernels run (0 portable, 1 avx2, 2 neon, 3 avx512)."""
    return _ACTIVE


def uses_repacked(isa: int | None = None) -> bool:
    """Whether the path reads matrices row-interleaved (QTensor.repack4): avx2 and avx512."""
    code = _ACTIVE if isa is None else isa
    return code in (ISA_BY_NAME["avx2"], ISA_BY_NAME["avx512"])


@contextlib.contextmanager
def isa_override(name: str):
    """Run the block on another supported path (tests, benchmarks): kernels, the Mimi module
    and every CpuBackend made inside the block use it. Not thread-safe; restores on exit."""
    global _ACTIVE
    if name not in supported_isas():
        raise ValueError(f"kernel path {name!r} is not supported here ({', '.join(supported_isas())})")
    from . import _mimi

    old = _ACTIVE
    _ACTIVE = ISA_BY_NAME[name]
    _kernels.set_isa(_ACTIVE)
    _mimi.set_isa(_ACTIVE)
    try:
        yield
    finally:
        _ACTIVE = old
        _kernels.set_isa(old)
        _mimi.set_isa(old)


def cpu_features() -> dict:
    """What was detected on this CPU and which kernel path runs."""
    compiled = _kernels.compiled_isas()
    return {
        "machine": platform.machine(),
        "detected": _kernels.ISA_NAMES[_kernels.detected_isa()],
        "active": _kernels.ISA_NAMES[_ACTIVE],
        "forced_by_env": _FORCED,
        "supported": supported_isas(),
        "compiled": [name for code, name in _kernels.ISA_NAMES.items() if (compiled >> code) & 1],
        "openmp": _kernels.openmp_enabled(),
        "max_threads": _kernels.omp_max_threads(),
    }
