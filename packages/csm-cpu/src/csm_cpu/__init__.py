"""csm-cpu: CPU backend for CSM-1B (Cython kernels with AVX2/NEON/portable paths, OpenMP)."""

from .features import cpu_features

__all__ = ["cpu_features"]
