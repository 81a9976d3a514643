"""Named voices for `csm serve`: the ones given at start (`--voice NAME=FILE`, read-only) and the
ones added over the API, persisted one `.npz` file each under `<data dir>/voices/` with the context
audio already encoded into Mimi codes (encoded once, when the voice is added).

    store = VoiceStore(data_dir, fixed=[Voice("narrator", 1, segments)])
    store.add(Voice("ann", 0, segments_with_codes))   # written atomically; survives a restart
    store.get("ann"); store.remove("ann"); store.list()
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from csm_core import Segment

__all__ = ["Voice", "VoiceError", "VoiceStore", "NAME_RULE"]

logger = logging.getLogger(__name__)

NAME_RULE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")  # also keeps names safe as file names
FORMAT_VERSION = 1


class VoiceError(ValueError):
    """A voice request is wrong: `field` names the part at fault; `kind` is not_found, conflict or invalid."""

    def __init__(self, field: str, message: str, kind: str = "invalid"):
        super().__init__(message)
        self.field, self.kind = field, kind


@dataclass(frozen=True)
class Voice:
    """A named voice: the speaker id to generate as, and its context turns (codes, not audio)."""

    name: str
    speaker: int
    context: tuple[Segment, ...] = ()
    source: str = "cli"  # cli: given at start (read-only) | api: added over HTTP (persisted)

    def describe(self) -> dict:
        return {
            "id": self.name,
            "name": self.name,
            "speaker": self.speaker,
            "context_turns": len(self.context),
            "context_seconds": round(sum(_frames(s) for s in self.context) * 0.08, 2),
            "source": self.source,
        }


def _frames(segment: Segment) -> int:
    return 0 if segment.codes is None else int(np.asarray(segment.codes).shape[-1])


def check_name(name) -> str:
    if not isinstance(name, str) or not NAME_RULE.fullmatch(name):
        raise VoiceError(
            "name", f"voice name {name!r} must start with a letter and hold at most 64 letters, digits, '_', '.' or '-'"
        )
    return name


class VoiceStore:
    """Voices by name; `data_dir=None` keeps API voices in memory only."""

    def __init__(self, data_dir: str | os.PathLike | None = None, fixed: Iterable[Voice] = ()):
        self.dir = None if data_dir is None else Path(data_dir) / "voices"
        self._lock = threading.Lock()
        self._voices: dict[str, Voice] = {}
        for v in fixed:
            self._voices[v.name] = Voice(v.name, v.speaker, tuple(v.context), "cli")
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            for path in sorted(self.dir.glob("*.npz")):
                try:
                    voice = _read(path)
                except (OSError, ValueError, KeyError) as e:
                    logger.warning("%s: not a csm voice file, skipped (%s)", path, e)
                    continue
                if voice.name in self._voices:
                    logger.warning("%s: the voice %r is given on the command line; the file is ignored", path, voice.name)
                    continue
                self._voices[voice.name] = voice

    def list(self) -> list[Voice]:
        with self._lock:
            return sorted(self._voices.values(), key=lambda v: v.name)

    def get(self, name: str) -> Voice | None:
        return self._voices.get(name)

    def add(self, voice: Voice) -> Voice:
        check_name(voice.name)
        if any(s.codes is None for s in voice.context):
            raise ValueError("a stored voice's context turns must carry codes (encode the audio first)")
        voice = Voice(voice.name, voice.speaker, tuple(voice.context), "api")
        with self._lock:
            if voice.name in self._voices:
                raise VoiceError("name", f"a voice named {voice.name!r} exists already; delete it first", "conflict")
            if self.dir is not None:
                _write(self.dir / f"{voice.name}.npz", voice)
            self._voices[voice.name] = voice
        return voice

    def remove(self, name: str) -> Voice:
        with self._lock:
            voice = self._voices.get(name)
            if voice is None:
                raise VoiceError("voice_id", f"no voice named {name!r}", "not_found")
            if voice.source == "cli":
                raise VoiceError("voice_id", f"the voice {name!r} was given on the command line (--voice); it cannot be deleted", "conflict")
            if self.dir is not None:
                (self.dir / f"{name}.npz").unlink(missing_ok=True)
            del self._voices[name]
        return voice


def _write(path: Path, voice: Voice) -> None:
    meta = {
        "version": FORMAT_VERSION,
        "name": voice.name,
        "speaker": voice.speaker,
        "turns": [{"speaker": s.speaker, "text": s.text} for s in voice.context],
    }
    arrays = {f"codes_{i}": np.asarray(s.codes, np.int16) for i, s in enumerate(voice.context)}
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    os.replace(tmp, path)  # a crash leaves the old file or the new one, never half of one


def _read(path: Path) -> Voice:
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(data["meta"].tobytes())
        if meta.get("version") != FORMAT_VERSION:
            raise ValueError(f"format version {meta.get('version')!r}, expected {FORMAT_VERSION}")
        turns = tuple(
            Segment(int(t["speaker"]), str(t["text"]), codes=data[f"codes_{i}"].astype(np.int64))
            for i, t in enumerate(meta["turns"])
        )
    return Voice(check_name(meta["name"]), int(meta["speaker"]), turns, "api")
