"""Which watermark the app puts on its output: SilentCipher (the official generator's mark),
csm's own keyed mark, or none.

The default follows the official generator: SilentCipher when its weights are found (a directory
named by $CSM_SILENTCIPHER_WEIGHTS, else the `sony/silentcipher` snapshot in the hub cache),
otherwise csm's mark with a one-line notice saying why and how to get SilentCipher's. Nothing is
downloaded.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

from csm_core.protocols import WatermarkResult

from .discovery import hub_cache_dir

__all__ = ["CHOICES", "ENV_WEIGHTS", "Choice", "choose", "detect_all", "describe", "requested"]

CHOICES = ("silentcipher", "csm", "none")
ENV_WEIGHTS = "CSM_SILENTCIPHER_WEIGHTS"
logger = logging.getLogger(__name__)


@dataclass
class Choice:
    name: str  # "silentcipher" | "csm" | "none"
    marker: object | None  # a csm_core.protocols.Watermarker
    why: str = ""  # why this one (where the weights are, or why SilentCipher was not used)


def requested(kind: str | None, no_watermark: bool = False) -> str | bool:
    """The CLI's --watermark / --no-watermark as CSM.load's `watermark` argument."""
    if no_watermark:
        if kind not in (None, "none"):
            raise ValueError(f"--no-watermark contradicts --watermark {kind}")
        return "none"
    return kind or True


def _silentcipher(path: str | os.PathLike | None = None):
    """(model, where) or (None, why not)."""
    from csm_audio.watermark import silentcipher as sc

    path = path or os.environ.get(ENV_WEIGHTS) or None
    try:
        model = sc.load(path, cache=None if path else hub_cache_dir())
    except sc.SilentCipherNotFound as e:
        return None, str(e).splitlines()[0] + f" (set {ENV_WEIGHTS}=DIR or put {sc.REPO_ID} in the hub cache)"
    return model, model.source


def choose(watermark: bool | str = True, weights: str | os.PathLike | None = None) -> Choice:
    """watermark: True/"auto" (SilentCipher if found, else csm), "silentcipher" (an error when
    its weights are missing), "csm", or False/"none"."""
    kind = {True: "auto", False: "none"}.get(watermark, watermark) if isinstance(watermark, bool) else watermark
    if kind not in CHOICES + ("auto",):
        raise ValueError(f"watermark must be one of {', '.join(CHOICES)} (or auto), got {watermark!r}")
    if kind == "none":
        return Choice("none", None, "watermarking turned off")
    if kind == "csm":
        from csm_audio.watermark import PatchworkWatermarker

        return Choice("csm", PatchworkWatermarker(), "csm's own keyed mark (SilentCipher detectors do not see it)")
    model, where = _silentcipher(weights)
    if model is not None:
        from csm_audio.watermark.silentcipher import SilentCipherWatermarker

        return Choice("silentcipher", SilentCipherWatermarker(model), f"weights {where}")
    if kind == "silentcipher":
        from csm_audio.watermark.silentcipher import SilentCipherNotFound

        raise SilentCipherNotFound(f"--watermark silentcipher: {where}")
    from csm_audio.watermark import PatchworkWatermarker

    logger.warning("watermark: csm's own mark, not SilentCipher's: %s", where)
    return Choice("csm", PatchworkWatermarker(), where)


def describe(weights: str | os.PathLike | None = None) -> str:
    """One line for `csm info`: the mark the default would use and why."""
    from csm_audio.watermark.silentcipher import find_checkpoint_dir

    path = weights or os.environ.get(ENV_WEIGHTS) or None
    found, _ = find_checkpoint_dir(path, None if path else hub_cache_dir())
    if found is not None:
        return f"silentcipher (official; weights {found})"
    return f"csm (SilentCipher weights not found: set {ENV_WEIGHTS}=DIR or put sony/silentcipher in the hub cache)"


def detect_all(audio: np.ndarray, sample_rate: int, marks=("csm", "silentcipher")) -> dict[str, WatermarkResult | str]:
    """Each mark's detection result, or a string saying why it was not checked."""
    out: dict[str, WatermarkResult | str] = {}
    for name in marks:
        if name == "csm":
            from csm_audio.watermark import PatchworkWatermarker

            out[name] = PatchworkWatermarker().detect(audio, sample_rate)
        else:
            model, where = _silentcipher()
            if model is None:
                out[name] = f"not checked: {where}"
            else:
                from csm_audio.watermark.silentcipher import verify

                out[name] = verify(audio, sample_rate, model=model)
    return out


def is_whole_clip(marker) -> bool:
    """SilentCipher normalises over the whole clip, so a stream is marked once it has ended."""
    return bool(getattr(marker, "whole_clip", False))


def joined(chunks):
    """An audio chunk stream as one chunk at its end (nothing for an empty stream)."""
    parts = [c for c in chunks if c.size]
    if parts:
        yield np.concatenate(parts)


def joined_events(events):
    """(index, chunk | None) batch events with each request's chunks joined into one, given
    just before that request's end marker."""
    held: dict[int, list[np.ndarray]] = {}
    try:
        for i, chunk in events:
            if chunk is not None:
                held.setdefault(i, []).append(chunk)
                continue
            parts = [c for c in held.pop(i, []) if c.size]
            if parts:
                yield i, np.concatenate(parts)
            yield i, None
    finally:
        events.close()
