"""What the CLI and the server read besides text: context turns (a JSONL file of
{"speaker", "text", "audio"} objects, or a list of them). `csm batch` request files: csm_app.corpus.

A problem in a user's file is an `InputError` naming the file and line (the CLI exits 2 on it).
Relative audio paths are resolved against the directory of the file that names them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path
from typing import Callable

import numpy as np

from csm_core import Segment

__all__ = ["InputError", "Turn", "parse_turn", "read_context", "context_segments", "read_jsonl"]

TURN_KEYS = ("speaker", "text", "audio")


class InputError(ValueError):
    """A user's input file or object is malformed; the message names where."""


@dataclass(frozen=True)
class Turn:
    """A context turn as written: who, what, and the audio file of how it sounded."""

    speaker: int
    text: str
    audio: Path | None


def _speaker(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
        raise InputError(f"{where}: 'speaker' must be an integer >= 0, got {value!r}")
    return int(value)


def _unknown_keys(row: dict, known: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(row) - set(known))
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; expected {', '.join(known)}")


def parse_turn(row, where: str, base: Path) -> Turn:
    """One context turn object: 'text' (str), 'speaker' (int, default 0), 'audio' (a path)."""
    if not isinstance(row, dict) or not isinstance(row.get("text"), str):
        raise InputError(f"{where}: expected a JSON object with 'text' (and 'speaker', 'audio'), got {row!r:.80}")
    _unknown_keys(row, TURN_KEYS, where)
    audio = row.get("audio")
    if audio is not None and not isinstance(audio, str):
        raise InputError(f"{where}: 'audio' must be a file path, got {audio!r:.80}")
    path = base / audio if audio else None  # an absolute path stays as it is
    return Turn(_speaker(row.get("speaker", 0), where), row["text"], path)


def read_jsonl(path: Path) -> list[tuple[int, object]]:
    """(line number, value) of each non-blank line."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read it: {e}") from e
    rows = []
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                rows.append((n, json.loads(line)))
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{n}: not a JSON object: {e}") from None
    return rows


def read_context(path: str | Path) -> list[Turn]:
    """The turns of a context JSONL file, one object per line."""
    path = Path(path)
    return [parse_turn(row, f"{path}:{n}", path.parent) for n, row in read_jsonl(path)]


def context_segments(turns: list[Turn], read_audio: Callable[[Path], np.ndarray]) -> list[Segment]:
    """Segments with each turn's audio read (`read_audio(path)`; the caller may cache it)."""
    return [Segment(t.speaker, t.text, audio=read_audio(t.audio) if t.audio else None) for t in turns]
