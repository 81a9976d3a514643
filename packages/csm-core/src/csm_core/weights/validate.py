"""Strict checks of a weight dict against the shapes a model expects."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from .errors import CheckpointError

__all__ = ["validate_weights", "nonfinite_tensors"]

_SHOW = 10  # names listed per problem kind before "... and N more"
_CHUNK = 1 << 22  # elements checked at a time, so a 268M-element table needs no 268 MB mask


def _listing(items: list[str]) -> str:
    more = f"\n    ... and {len(items) - _SHOW} more" if len(items) > _SHOW else ""
    return "".join(f"\n    {s}" for s in items[:_SHOW]) + more


def nonfinite_tensors(weights: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Floating-point tensors holding NaN or inf -> count of such values."""
    bad: dict[str, int] = {}
    for name, a in weights.items():
        if a.dtype.kind in "biu" or a.dtype == np.bool_:
            continue
        flat = a.reshape(-1)
        n = 0
        for i in range(0, flat.size, _CHUNK):
            ok = np.isfinite(flat[i : i + _CHUNK])
            if not ok.all():
                n += ok.size - int(ok.sum())
        if n:
            bad[name] = n
    return bad


def validate_weights(
    shapes: Mapping[str, tuple[int, ...]],
    weights: Mapping[str, np.ndarray],
    source: str = "weights",
    *,
    check_finite: bool = True,
) -> None:
    """Raise CheckpointError unless `weights` has exactly the names in `shapes`, each with its shape,
    and (with check_finite) no NaN/inf. The message lists every problem: missing, unexpected,
    mis-shaped (expected and found) and non-finite tensors, by name."""
    missing = [f"{n} {tuple(s)}" for n, s in shapes.items() if n not in weights]
    extra = [f"{n} {tuple(weights[n].shape)}" for n in weights if n not in shapes]
    wrong = [
        f"{n}: expected {tuple(s)}, found {tuple(weights[n].shape)}"
        for n, s in shapes.items()
        if n in weights and tuple(weights[n].shape) != tuple(s)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing tensor(s):{_listing(missing)}")
    if extra:
        problems.append(f"{len(extra)} unexpected tensor(s):{_listing(extra)}")
    if wrong:
        problems.append(f"{len(wrong)} tensor(s) with the wrong shape:{_listing(wrong)}")
    if not problems and check_finite:
        bad = nonfinite_tensors(weights)
        if bad:
            problems.append(f"{len(bad)} tensor(s) with NaN/inf values:{_listing([f'{n}: {c} values' for n, c in bad.items()])}")
    if problems:
        raise CheckpointError(f"{source}: " + "\n  ".join(problems))
