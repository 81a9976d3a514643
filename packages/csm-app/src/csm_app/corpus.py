"""Corpus synthesis (`csm batch`): many requests into audio files, each exactly once, resumable.

Requests come from JSONL, CSV or Parquet, one per row: `text` (required), `id`, `speaker`, `context`
(a list of {speaker, text, audio} turns, or the path of a context JSONL file), `voice` (the path of
a context JSONL file: a voice to copy), `output` (a path under the output directory; its extension
picks the format; default `<id>.<format>`), and per-row generation options (`temperature`, `topk`,
`seed`, `max_audio_ms`, `split_sentences`, `mask_undecodable`) over the command's.

Exactly once, and resumable:
- every row has a stable id: its own `id`, else one derived from its line and content;
- every row has a seed: its own, else one derived from the run's seed and its id, so a re-run
  reproduces the same audio;
- audio is written under a temporary name beside the final one and renamed when complete, then a
  row is appended to `manifest.jsonl` (flushed to disk) in the output directory. A row is done when
  the manifest holds its id and its file exists with the recorded size: a re-run skips it. Killed at
  any moment, no final name holds a truncated file and no manifest row lacks its file (a torn last
  manifest line is dropped on the next run).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from csm_core import GenerationOptions, OptionError, Segment

from .inputs import InputError, Turn, parse_turn, read_context, read_jsonl

__all__ = [
    "CorpusRow",
    "read_rows",
    "Manifest",
    "VoiceCache",
    "write_atomic",
    "clean_temporaries",
    "check_rows",
    "run_meta",
    "generate_rows",
    "manifest_row",
    "Progress",
]

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ROW_KEYS = ("id", "text", "speaker", "context", "voice", "output")
OPTION_KEYS = GenerationOptions.field_names()
MAX_REPORTED = 20  # bad rows listed in one error


@dataclass(frozen=True)
class CorpusRow:
    """One request of a corpus, checked: what to say, how, and where its audio goes."""

    id: str
    where: str  # "file:line" (CSV/Parquet: the row's line or number)
    text: str
    speaker: int
    turns: tuple[Turn, ...]
    voice: str | None  # the voice (context) file named by the row, for the manifest
    options: GenerationOptions
    output: str  # relative to the output directory (posix), or absolute
    fmt: str

    def to_dict(self) -> dict:
        """Plain values (for Ray Data): turns as [speaker, text, audio path] lists, options as a dict."""
        d = asdict(self)
        d["turns"] = [[t.speaker, t.text, str(t.audio) if t.audio else None] for t in self.turns]
        d["options"] = self.options.as_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CorpusRow":
        turns = tuple(Turn(int(s), str(t), Path(a) if a else None) for s, t, a in d["turns"])
        opts = GenerationOptions.from_mapping(dict(d["options"]))
        return cls(str(d["id"]), str(d["where"]), str(d["text"]), int(d["speaker"]), turns,
                   d["voice"] or None, opts, str(d["output"]), str(d["fmt"]))


# ---------------------------------------------------------------- reading
def _raw_rows(path: Path) -> list[tuple[str, dict]]:
    """(where, row) for every row of a JSONL, CSV or Parquet file."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return [(f"{path}:{n}", row) for n, row in read_jsonl(path)]
    if suffix == ".csv":
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"{path}: cannot read it: {e}") from e
        reader = csv.DictReader(io.StringIO(text))
        rows = []
        for row in reader:
            if None in row:
                raise InputError(f"{path}:{reader.line_num}: more fields than the header names")
            rows.append((f"{path}:{reader.line_num}", {k: v for k, v in row.items() if v not in ("", None)}))
        return rows
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise InputError(f"{path}: reading Parquet needs pyarrow: pip install pyarrow") from None
        try:
            table = pq.read_table(path)
        except Exception as e:  # noqa: BLE001 - pyarrow raises many types for a bad file
            raise InputError(f"{path}: not a readable Parquet file: {e}") from e
        return [(f"{path}:row {i + 1}", {k: v for k, v in r.items() if v is not None})
                for i, r in enumerate(table.to_pylist())]
    raise InputError(f"{path}: unknown request file type {suffix or '(none)'!r}; use .jsonl, .csv or .parquet")


def _from_text(key: str, value):
    """CSV cells are strings: numbers and flags of the known keys become numbers and flags."""
    if not isinstance(value, str):
        return value
    if key in ("speaker", "topk", "seed"):
        return int(value) if re.fullmatch(r"[+-]?\d+", value.strip()) else value
    if key in ("temperature", "max_audio_ms"):
        try:
            return float(value)
        except ValueError:
            return value
    if key in ("split_sentences", "mask_undecodable"):
        return {"true": True, "false": False, "1": True, "0": False}.get(value.strip().lower(), value)
    return value


def read_rows(
    path: str | Path, default_fmt: str, formats: tuple[str, ...], base: GenerationOptions, base_seed: int = 0
) -> list[CorpusRow]:
    """Every row of a request file, checked; all bad rows (up to 20) are reported together in one
    InputError naming file:line before anything is generated."""
    path = Path(path)
    rows, errors = [], []
    ids: dict[str, str] = {}
    outputs: dict[str, str] = {}
    for where, raw in _raw_rows(path):
        try:
            row = _parse_row(where, raw, path, default_fmt, formats, base, base_seed)
            if row.id in ids:
                raise InputError(f"{where}: id {row.id!r} is also {ids[row.id]}'s")
            if row.output in outputs:
                raise InputError(f"{where}: output {row.output!r} is also {outputs[row.output]}'s")
        except InputError as e:
            errors.append(str(e))
            if len(errors) >= MAX_REPORTED:
                break
            continue
        ids[row.id], outputs[row.output] = where, where
        rows.append(row)
    if errors:
        more = " (and maybe more)" if len(errors) >= MAX_REPORTED else ""
        raise InputError(f"{len(errors)} bad request(s){more}:\n" + "\n".join(errors))
    if not rows:
        raise InputError(f"{path}: no requests (expected one per line or row)")
    return rows


def _parse_row(where, raw, path: Path, default_fmt, formats, base: GenerationOptions, base_seed: int) -> CorpusRow:
    if not isinstance(raw, dict):
        raise InputError(f"{where}: expected an object with 'text', got {raw!r:.80}")
    raw = {k: _from_text(k, v) for k, v in raw.items()}
    unknown = sorted(set(raw) - set(ROW_KEYS) - set(OPTION_KEYS))
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; expected {', '.join(ROW_KEYS + OPTION_KEYS)}")
    text = raw.get("text")
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{where}: 'text' must be a non-empty string, got {text!r:.80}")
    speaker = raw.get("speaker", 0)
    if isinstance(speaker, bool) or not isinstance(speaker, (int, np.integer)) or speaker < 0:
        raise InputError(f"{where}: 'speaker' must be an integer >= 0, got {speaker!r}")
    turns: list[Turn] = []
    voice = raw.get("voice")
    if voice is not None:
        if not isinstance(voice, str) or not voice.strip():
            raise InputError(f"{where}: 'voice' must be the path of a context JSONL file, got {voice!r:.80}")
        turns += _context_file(path.parent / voice, where, "voice")
    context = raw.get("context", [])
    if isinstance(context, str):
        turns += _context_file(path.parent / context, where, "context")
    elif isinstance(context, (list, tuple)):
        turns += [parse_turn(t, f"{where}: context[{i}]", path.parent) for i, t in enumerate(context)]
    else:
        raise InputError(f"{where}: 'context' must be a list of turns or a JSONL file path, got {context!r:.80}")
    for i, t in enumerate(turns):
        if t.audio is None:
            raise InputError(f"{where}: context turn {i} ({t.text[:30]!r}) has no audio; context turns need it")
        if not t.audio.is_file():
            raise InputError(f"{where}: context turn {i}: audio file {str(t.audio)!r} not found")
    try:
        options = GenerationOptions.from_mapping({k: raw[k] for k in OPTION_KEYS if k in raw}, where=where, base=base)
    except OptionError as e:
        raise InputError(str(e)) from None
    given = raw.get("id")
    if given is not None:
        rid = str(given)
        if not ID_PATTERN.match(rid):
            raise InputError(f"{where}: 'id' must be 1-128 of letters, digits, '.', '_', '-' (not first), got {rid!r:.80}")
    else:
        content = json.dumps([where.rsplit(":", 1)[-1], text, int(speaker), repr(context), voice, raw.get("output"),
                              {k: raw[k] for k in OPTION_KEYS if k in raw}], sort_keys=True, default=str)
        rid = hashlib.sha256(content.encode()).hexdigest()[:16]
    if options.seed is None:
        options = options.replace(seed=derived_seed(base_seed, rid))
    name = raw.get("output", f"{rid}.{default_fmt}")
    if not isinstance(name, str) or not name.strip() or "\0" in name:
        raise InputError(f"{where}: 'output' must be a file name, got {name!r:.80}")
    fmt = Path(name).suffix.lower().lstrip(".")
    if fmt not in formats:
        raise InputError(f"{where}: cannot tell the audio format of output {name!r}; end it in .{', .'.join(formats)}")
    if ".." in Path(name).parts:
        raise InputError(f"{where}: output {name!r} must not climb out of the output directory ('..')")
    return CorpusRow(rid, where, text, int(speaker), tuple(turns), voice, options, Path(name).as_posix(), fmt)


def _context_file(path: Path, where: str, key: str) -> list[Turn]:
    if not path.is_file():  # a device (/dev/zero) would be read without end
        why = "is not a regular file" if path.exists() else "not found"
        raise InputError(f"{where}: {key} file {str(path)!r} {why}")
    try:
        return read_context(path)
    except InputError as e:
        raise InputError(f"{where}: {key}: {e}") from None


def derived_seed(base_seed: int, row_id: str) -> int:
    """A row's seed when it gives none: from the run's seed and its id (same run, same audio)."""
    return int.from_bytes(hashlib.sha256(f"{base_seed}:{row_id}".encode()).digest()[:8], "little") >> 1


# ---------------------------------------------------------------- the manifest
class Manifest:
    """`manifest.jsonl` in the output directory: one JSON line per finished file, appended and
    flushed to disk after the file is in place. The last line per id wins."""

    NAME = "manifest.jsonl"

    def __init__(self, out_dir: Path):
        self.path = Path(out_dir) / self.NAME
        self.rows: dict[str, dict] = {}
        if self.path.is_file():
            self._load()

    def _load(self) -> None:
        data = self.path.read_bytes()
        good = 0
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # torn by a kill mid-write: dropped below
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break
            self.rows[str(row["id"])] = row
            good += len(line)
        if good < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good)

    def done(self, out_dir: Path, row_id: str) -> bool:
        """Finished: recorded, and its file is there with the recorded size."""
        row = self.rows.get(row_id)
        if row is None:
            return False
        p = out_dir / row["output"]
        return p.is_file() and p.stat().st_size == row["bytes"]

    def append(self, row: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as f:
            f.write(json.dumps(row, sort_keys=True).encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        self.rows[str(row["id"])] = row


def write_atomic(path: Path, audio: np.ndarray, sample_rate: int, fmt: str) -> tuple[int, str]:
    """Write the audio under a temporary name beside `path`, flush it to disk, rename it into
    place. Returns (bytes, sha256 hex) of the file."""
    from .audio_io import write_output

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    try:
        write_output(str(tmp), audio, sample_rate, fmt)
        with open(tmp, "rb+") as f:
            data = f.read()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return len(data), hashlib.sha256(data).hexdigest()


def clean_temporaries(out_dir: Path) -> int:
    """Remove temporary files a killed run left (never a final name)."""
    n = 0
    for p in Path(out_dir).rglob(".*.tmp"):
        p.unlink(missing_ok=True)
        n += 1
    return n


# ---------------------------------------------------------------- generating
class VoiceCache:
    """Context turns as Segments with codes, each audio file read and encoded once."""

    def __init__(self, tts):
        self.tts = tts
        self._codes: dict[Path, np.ndarray] = {}

    def segments(self, turns: Iterable[Turn]) -> list[Segment]:
        from .audio_io import read_context_audio

        out = []
        for t in turns:
            key = t.audio.resolve()
            if key not in self._codes:
                audio = read_context_audio(t.audio, self.tts.sample_rate)
                self._codes[key] = self.tts.encode_context([Segment(t.speaker, t.text, audio=audio)])[0].codes
            out.append(Segment(t.speaker, t.text, codes=self._codes[key]))
        return out


def manifest_row(row: CorpusRow, generation, nbytes: int, sha: str, sample_rate: int, meta: dict) -> dict:
    frames = int(generation.codes.shape[1])
    return {
        "id": row.id, "where": row.where, "text": row.text, "speaker": row.speaker, "voice": row.voice,
        "seed": row.options.seed, "output": row.output, "format": row.fmt, "frames": frames,
        "duration_s": round(frames * 0.08, 3), "sample_rate": sample_rate, "bytes": nbytes, "sha256": sha,
        "stop": generation.stats.stop_reasons[-1] if generation.stats.stop_reasons else None, **meta,
    }  # fmt: skip


def check_rows(sched, rows: list[CorpusRow], voices: VoiceCache, out_dir: Path) -> None:
    """Everything that would fail a row, before anything is generated: each request against the
    model (context audio readable and encodable, prompt fits the window) and the output directory
    writable. Raises ValueError naming file:line."""
    for row in rows:
        try:
            sched.check(row.text, row.speaker, voices.segments(row.turns), row.options)
        except (TypeError, ValueError, OSError) as e:
            raise ValueError(f"{row.where}: {e}") from e
    probe = Path(out_dir) / f".csm-write-check.{os.getpid()}.tmp"
    try:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"output directory {str(out_dir)!r} is not writable: {e.strerror or e}") from e


def run_meta(tts, quant: str | None) -> dict:
    """What every manifest row records about the model that made it."""
    info = getattr(tts, "info", None)
    return {
        "model": str(info.files.weights) if info is not None else None,
        "backend": info.backend_name if info is not None else getattr(tts.model, "name", None),
        "quant": quant or getattr(tts.model, "quant", None),
        "watermark": "none" if tts.watermarker is None else type(tts.watermarker).__name__,
    }


def generate_rows(
    tts, sched, rows: list[CorpusRow], out_dir: Path, *, meta: dict | None = None, voices: VoiceCache | None = None,
) -> Iterator[dict]:  # fmt: skip
    """Generate `rows` on `sched` (a `tts.scheduler(..., chunk_frames=None)`: codes only; rows refill
    freed slots), decode each finished row's codes as one clip, write each
    file atomically and yield its manifest row (the caller records it). A row that produces no
    audio yields a row with an 'error' and no file."""
    slots = sched.slots
    voices = voices or VoiceCache(tts)
    pending = list(reversed(rows))
    running: dict[int, tuple[object, CorpusRow]] = {}
    while pending or running:
        while pending and sched.waiting < slots:  # keep a full slot's worth waiting
            row = pending.pop()
            job = sched.submit(row.text, row.speaker, voices.segments(row.turns), row.options)
            running[job.id] = (job, row)
        sched.step()
        for jid in [k for k, (j, _) in running.items() if j.done]:
            job, row = running.pop(jid)
            result = sched.result(job)
            if result.codes.shape[1] == 0:
                yield {"id": row.id, "where": row.where, "output": row.output, "frames": 0,
                       "error": "no audio was generated (the model stopped at once)"}
                continue
            # one whole-clip decode per row: the file depends on its codes alone, not on which rows
            # shared a batched streaming decode (whose products round a row's last bit by batch size)
            audio = tts.mark(tts.codec.decode(result.codes))
            nbytes, sha = write_atomic(_output_path(out_dir, row), audio, tts.sample_rate, row.fmt)
            yield manifest_row(row, result, nbytes, sha, tts.sample_rate, meta or {})


def _output_path(out_dir: Path, row: CorpusRow) -> Path:
    return Path(out_dir) / row.output  # an absolute output stays as it is


class Progress:
    """rows done, audio hours, rate, ETA on one terminal line (stderr), when enabled."""

    def __init__(self, total: int, already: int, write: Callable[[str], None] | None):
        self.total, self.done, self.write = total, already, write
        self.audio_s = 0.0
        self.started = time.perf_counter()
        self.new = 0

    def update(self, row: dict) -> None:
        self.done += 1
        self.new += 1
        self.audio_s += row.get("duration_s", 0.0)
        if self.write is None:
            return
        elapsed = time.perf_counter() - self.started
        rate = self.new / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        eta_s = f"{eta / 60:.1f} min" if eta != float("inf") else "?"
        self.write(f"\rcsm: {self.done}/{self.total} rows, {self.audio_s / 3600:.3f} h of audio, "
                   f"{rate:.2f} rows/s ({self.audio_s / elapsed if elapsed > 0 else 0:.2f} audio s/s), ETA {eta_s}")
