"""What the CLI and the server read besides text: context turns (a JSONL file of
{"speaker", "text", "audio"} objects, or a list of them) and the Mimi code files (.npy) of
`csm codec decode`. `csm batch` request files: csm_app.corpus (on read_jsonl).

A problem in a user's file is an `InputError` naming the file and line (the CLI exits 2 on it).
Relative audio paths are resolved against the directory of the file that names them.
"""

from __future__ import annotations

import json
import reprlib
import tokenize
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path
from typing import Callable

import numpy as np

from csm_core import Segment

__all__ = ["InputError", "Turn", "parse_turn", "read_context", "context_segments", "read_jsonl", "read_codes"]

TURN_KEYS = ("speaker", "text", "audio")
MAX_FILE_BYTES = 256 << 20  # a request or context file (a million requests is ~100 MB)
_MAX_NPY_HEADER = 10_000  # numpy's own limit for headers it parses safely


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
        raise InputError(f"{where}: 'speaker' must be an integer >= 0, got {reprlib.repr(value)}")
    return int(value)


def _unknown_keys(row: dict, known: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(row) - set(known))
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; expected {', '.join(known)}")


def parse_turn(row, where: str, base: Path) -> Turn:
    """One context turn object: 'text' (str), 'speaker' (int, default 0), 'audio' (a path)."""
    if not isinstance(row, dict) or not isinstance(row.get("text"), str):
        raise InputError(f"{where}: expected a JSON object with 'text' (and 'speaker', 'audio'), got {reprlib.repr(row)}")
    _unknown_keys(row, TURN_KEYS, where)
    audio = row.get("audio")
    if audio is not None and (not isinstance(audio, str) or "\0" in audio):
        raise InputError(f"{where}: 'audio' must be a file path, got {reprlib.repr(audio)}")
    path = base / audio if audio else None  # an absolute path stays as it is
    return Turn(_speaker(row.get("speaker", 0), where), row["text"], path)


def read_jsonl(path: Path) -> list[tuple[int, object]]:
    """(line number, value) of each non-blank line."""
    path = Path(path)
    if not path.is_file():  # a device (/dev/zero, a pipe) would be read without end
        raise InputError(f"{path}: cannot read it: " + ("not a regular file" if path.exists() else "no such file"))
    if path.stat().st_size > MAX_FILE_BYTES:
        raise InputError(f"{path}: {path.stat().st_size} bytes; request and context files are at most {MAX_FILE_BYTES}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read it: {e}") from e
    rows = []
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                rows.append((n, json.loads(line)))
            except (ValueError, RecursionError) as e:  # bad JSON, a 5000-digit number, nesting too deep
                raise InputError(f"{path}:{n}: not a JSON object: {type(e).__name__}: {str(e)[:200]}") from None
    return rows


def read_context(path: str | Path) -> list[Turn]:
    """The turns of a context JSONL file, one object per line."""
    path = Path(path)
    return [parse_turn(row, f"{path}:{n}", path.parent) for n, row in read_jsonl(path)]


def context_segments(turns: list[Turn], read_audio: Callable[[Path], np.ndarray]) -> list[Segment]:
    """Segments with each turn's audio read (`read_audio(path)`; the caller may cache it)."""
    return [Segment(t.speaker, t.text, audio=read_audio(t.audio) if t.audio else None) for t in turns]


def read_codes(path: str | Path) -> np.ndarray:
    """Mimi codes [K, T] from a .npy file (as `csm codec encode` writes them), as int64.

    The header is checked against the file before any array is made: a 2-D integer array whose
    bytes are exactly the rest of the file (a header claiming 10^12 codes is refused, not
    allocated). Values are the codec's to check."""
    path = Path(path)
    fmt = np.lib.format
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(0)
            version = fmt.read_magic(f)
            if version not in ((1, 0), (2, 0)):
                raise InputError(f"{path}: .npy format version {version[0]}.{version[1]} is not supported (1.0, 2.0)")
            # the header's length, checked before numpy reads it (it would allocate what it claims)
            width = 2 if version == (1, 0) else 4
            hlen = int.from_bytes(f.read(width), "little")
            if f.tell() + hlen > size or hlen > _MAX_NPY_HEADER:
                raise InputError(f"{path}: .npy header of {hlen} bytes in a {size}-byte file")
            f.seek(-width, 1)
            read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
            start = f.tell()
            if len(shape) != 2 or dtype.kind not in "iu":
                raise InputError(f"{path}: expected integer codes [K, T], got {dtype} {shape}")
            nbytes = shape[0] * shape[1] * dtype.itemsize
            if nbytes != size - start:
                raise InputError(f"{path}: header says {dtype} {shape} ({nbytes} bytes), the file holds {size - start}")
            f.seek(start)
            data = np.frombuffer(f.read(nbytes), dtype)
    except OSError as e:
        raise InputError(f"{path}: cannot read it: {e}") from None
    except (ValueError, SyntaxError, EOFError, TypeError, tokenize.TokenError) as e:  # numpy's for a bad header
        if isinstance(e, InputError):
            raise
        raise InputError(f"{path}: not a numpy .npy array of codes ({e})") from None
    return data.reshape(shape, order="F" if fortran else "C").astype(np.int64)
