"""`GenerationOptions`: how one request is generated, defined and checked once for every layer
(Generator, scheduler, facade, CLI, batch files, HTTP). Defaults follow the official generator.

    opts = GenerationOptions(temperature=0.7, seed=3)            # checked here
    opts = GenerationOptions.from_mapping(body, where="request")   # JSON/CLI input; errors name the field
    opts = GenerationOptions.resolve(opts, {"topk": 20})           # an options object + keyword overrides
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Mapping

from .protocols import SamplingParams

__all__ = ["FRAME_MS", "DEFAULT_MAX_AUDIO_MS", "GenerationOptions", "OptionError", "UnknownOptionError"]

FRAME_MS = 80  # one Mimi frame at 12.5 Hz
DEFAULT_MAX_AUDIO_MS = 90_000  # official default: 1125 frames


class OptionError(ValueError):
    """A generation option is unknown or out of range; `field` names it (as the caller spelled it)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class UnknownOptionError(OptionError, TypeError):
    """An option name that does not exist (a TypeError too, as for an unknown keyword argument)."""


@dataclass(frozen=True)
class GenerationOptions:
    """max_audio_ms: audio length limit (per sentence when the text is split); temperature: 0 is
    greedy argmax; topk: codes kept per sampling step; seed: None, or an int that makes the codes
    reproducible (per request: the same codes alone or in any batch); split_sentences: long text is
    generated sentence by sentence with the earlier ones as context; mask_undecodable: never sample
    codes Mimi cannot decode (2048..2050; the official code does not mask them)."""

    max_audio_ms: float = DEFAULT_MAX_AUDIO_MS
    temperature: float = 0.9
    topk: int = 50
    seed: int | None = None
    split_sentences: bool = True
    mask_undecodable: bool = True

    def __post_init__(self) -> None:
        _check(self, "")

    # ---- derived ----
    @property
    def max_frames(self) -> int:
        return int(self.max_audio_ms / FRAME_MS)

    def sampling(self, codec_size: int = 2048) -> SamplingParams:
        return SamplingParams(self.temperature, self.topk, self.mask_undecodable, codec_size)

    # ---- construction from outside input ----
    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_mapping(
        cls,
        values: Mapping[str, Any],
        *,
        where: str = "",
        base: "GenerationOptions | None" = None,
        allowed: "tuple[str, ...] | None" = None,
    ) -> "GenerationOptions":
        """Options from JSON/CLI/HTTP input on top of `base` (default: the defaults). Unknown names and
        bad values raise OptionError whose message and `field` name the field (`where` prefixes it,
        e.g. "requests.jsonl:3" or "body"). `allowed` narrows the names a caller accepts."""
        if not isinstance(values, Mapping):
            raise OptionError(where or "options", f"{where or 'options'} must be a mapping, got {type(values).__name__}")
        names = cls.field_names()
        accepted = names if allowed is None else allowed
        unknown = [k for k in values if k not in accepted]
        if unknown:
            field = _join(where, str(unknown[0]))
            raise UnknownOptionError(field, f"unknown generation option {field!r}; known: {', '.join(accepted)}")
        base = base if base is not None else cls()
        merged = {n: getattr(base, n) for n in names}
        merged.update(values)
        obj = object.__new__(cls)
        for n in names:
            object.__setattr__(obj, n, merged[n])
        _check(obj, where)
        return obj

    @classmethod
    def resolve(
        cls, options: "GenerationOptions | None", overrides: Mapping[str, Any], allowed: "tuple[str, ...] | None" = None
    ) -> "GenerationOptions":
        """`options` (or the defaults) with keyword overrides, as the Python API takes them."""
        if options is not None and not isinstance(options, GenerationOptions):
            raise TypeError(f"options must be a GenerationOptions, got {type(options).__name__}")
        if not overrides:
            return options if options is not None else cls()
        return cls.from_mapping(overrides, base=options, allowed=allowed)

    def replace(self, **changes: Any) -> "GenerationOptions":
        return GenerationOptions.from_mapping(changes, base=self)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _check(o: GenerationOptions, where: str) -> None:
    """Normalise and check every field in place (the object is frozen: object.__setattr__)."""

    def fail(name: str, message: str):
        field = _join(where, name)
        raise OptionError(field, f"{field} {message}")

    def number(name: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
            fail(name, f"must be a finite number, got {value!r}")
        return float(value)

    def integer(name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, Integral):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            fail(name, f"must be an integer, got {value!r}")
        return int(value)

    def flag(name: str, value: Any) -> bool:
        if not isinstance(value, bool):
            fail(name, f"must be true or false, got {value!r}")
        return value

    ms = number("max_audio_ms", o.max_audio_ms)
    if ms <= 0:
        fail("max_audio_ms", f"must be > 0, got {ms:g}")
    if int(ms / FRAME_MS) < 1:
        fail("max_audio_ms", f"={ms:g} is shorter than one {FRAME_MS} ms frame")
    temperature = number("temperature", o.temperature)
    if temperature < 0:
        fail("temperature", f"must be >= 0 (0 = greedy), got {temperature:g}")
    topk = integer("topk", o.topk)
    if topk < 1:
        fail("topk", f"must be >= 1, got {topk}")
    seed = o.seed
    if seed is not None:
        seed = integer("seed", seed)
        if not 0 <= seed < 2**64:
            fail("seed", f"must be null or an integer in [0, 2**64), got {seed}")
    values = dict(
        max_audio_ms=ms,
        temperature=temperature,
        topk=topk,
        seed=seed,
        split_sentences=flag("split_sentences", o.split_sentences),
        mask_undecodable=flag("mask_undecodable", o.mask_undecodable),
    )
    for name, value in values.items():
        object.__setattr__(o, name, value)
