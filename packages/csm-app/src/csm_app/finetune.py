"""`csm finetune`: a dataset of recordings → LoRA adapter or fully fine-tuned weights (MLX).

DATA is JSONL or CSV. Each row: 'audio' (a file, relative to DATA's directory), 'text' (what is
said in it), 'speaker' (default 0) and, optionally, 'context': earlier turns as `csm batch` reads
them (a list of {"speaker", "text", "audio"} objects, or a context JSONL path; in CSV only a path).
A row becomes one training sequence laid out as at generation: each context turn's text frames and
audio frames (+ EOS frame), then the row's text and audio (+ EOS). Every audio frame is a target
(transformers' processor labels them all); the decoder trains on `decoder_fraction` of them.

Everything is checked before training starts: unreadable audio, text without audio, a sequence
longer than the context window and an empty dataset are InputErrors naming the file and line.
Audio is Mimi-encoded once: codes are cached under the cache directory keyed by the file's
content (sha256) and the codec file, so a second run (or a resume) encodes nothing.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from csm_core.config import CSMConfig
from csm_core.prompt import PromptFrames, audio_frames, text_frames

from .inputs import InputError, Turn, _speaker, _unknown_keys, parse_turn, read_context, read_jsonl

__all__ = ["DataRow", "read_dataset", "CodeCache", "build_examples", "split_validation", "finetune"]

ROW_KEYS = ("audio", "text", "speaker", "context")
DEFAULT_TARGETS = "q,k,v,o,gate,up,down"  # csm_mlx.training.lora.TARGETS (not imported: mlx may be absent)
logger = logging.getLogger("csm.finetune")


@dataclass(frozen=True)
class DataRow:
    where: str  # "file:line" for messages
    text: str
    speaker: int
    audio: Path
    context: tuple[Turn, ...] = ()


def _row(raw, where: str, base: Path) -> DataRow:
    if not isinstance(raw, dict):
        raise InputError(f"{where}: expected an object with 'audio', 'text' (and 'speaker', 'context'), got {raw!r:.80}")
    _unknown_keys(raw, ROW_KEYS, where)
    text, audio = raw.get("text"), raw.get("audio")
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{where}: 'text' must be a non-empty string (what is said in the audio), got {text!r:.80}")
    if audio is None or (isinstance(audio, str) and not audio.strip()):
        raise InputError(f"{where}: text without audio: every row needs 'audio', the recording of its text")
    if not isinstance(audio, str):
        raise InputError(f"{where}: 'audio' must be a file path, got {audio!r:.80}")
    context = raw.get("context") or []
    if isinstance(context, str):
        try:
            turns = read_context(base / context)
        except InputError as e:
            raise InputError(f"{where}: context {context!r}: {e}") from None
    elif isinstance(context, list):
        turns = [parse_turn(t, f"{where}: context[{i}]", base) for i, t in enumerate(context)]
    else:
        raise InputError(f"{where}: 'context' must be a list of turns or a JSONL file path, got {context!r:.80}")
    for i, t in enumerate(turns):
        if t.audio is None:
            raise InputError(f"{where}: context turn {i} ({t.text[:30]!r}) has text without audio")
    speaker = raw.get("speaker", 0)
    if isinstance(speaker, str) and speaker.strip().isdigit():  # CSV cells are strings
        speaker = int(speaker)
    return DataRow(where, text, _speaker(speaker, where), base / audio, tuple(turns))


def read_dataset(path: str | Path) -> list[DataRow]:
    """The rows of a JSONL or CSV dataset (CSV: a header row naming audio, text[, speaker, context])."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such dataset file")
    base = path.parent
    if path.suffix.lower() == ".csv":
        try:
            with path.open(newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                raws = [(n + 2, {k: v for k, v in r.items() if v not in (None, "")}) for n, r in enumerate(reader)]
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise InputError(f"{path}: cannot read it as CSV: {e}") from None
    else:
        raws = read_jsonl(path)
    rows = [_row(raw, f"{path}:{n}", base) for n, raw in raws]
    if not rows:
        raise InputError(f"{path}: no usable rows (expected objects with 'audio' and 'text')")
    return rows


class CodeCache:
    """Mimi codes [K, T] of audio files, cached as .npy under ``directory/<codec tag>/<sha256>.npy``."""

    def __init__(self, directory: Path, codec, num_codebooks: int, codec_tag: str,
                 read_audio: Callable[[Path], np.ndarray]):  # fmt: skip
        self.dir = Path(directory) / hashlib.sha256(f"{codec_tag}|{num_codebooks}".encode()).hexdigest()[:16]
        self.codec, self.K, self.read_audio = codec, num_codebooks, read_audio
        self.encoded = self.hits = 0

    @staticmethod
    def digest(path: Path) -> str:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    def codes(self, path: Path, where: str) -> np.ndarray:
        try:
            key = self.digest(path)
        except OSError as e:
            raise InputError(f"{where}: cannot read audio {path}: {e.strerror or e}") from None
        file = self.dir / f"{key}.npy"
        if file.is_file():
            self.hits += 1
            return np.load(file)
        try:
            audio = self.read_audio(path)
        except Exception as e:  # noqa: BLE001 - any decoder failure is the row's problem
            raise InputError(f"{where}: cannot read audio {path}: {e}") from None
        codes = np.asarray(self.codec.encode(audio, num_codebooks=self.K)).astype(np.int16)  # [K, T]
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = file.with_suffix(".tmp.npy")
        np.save(tmp, codes)
        tmp.replace(file)
        self.encoded += 1
        return codes


def build_examples(rows: Sequence[DataRow], tokenizer, cache: CodeCache, config: CSMConfig,
                   progress: Callable[[int, int], None] | None = None):  # fmt: skip
    """One training Example per row; raises InputError naming the row for anything unusable."""
    from csm_mlx.training.trainer import Example

    window = config.backbone.max_seq_len
    examples = []
    for i, row in enumerate(rows):
        parts: list[PromptFrames] = []
        for speaker, text, audio in [(t.speaker, t.text, t.audio) for t in row.context] + [(row.speaker, row.text, row.audio)]:
            codes = cache.codes(audio, row.where)
            if codes.shape[1] == 0:
                raise InputError(f"{row.where}: audio {audio} is shorter than one 80 ms frame")
            parts += [text_frames(tokenizer, speaker, text, config), audio_frames(codes.astype(np.int64), config)]
            total = sum(len(p) for p in parts)
            if total > window:
                raise InputError(
                    f"{row.where}: audio {audio} ({codes.shape[1] * 0.08:.1f} s) makes the sequence {total} frames long, "
                    f"over the model's {window}-position context window; cut the audio or drop context turns"
                )
        frames = PromptFrames.concat(parts)
        examples.append(Example(frames.tokens, frames.mask, row.where))
        if progress:
            progress(i + 1, len(rows))
    return examples


def split_validation(examples: list, fraction: float, seed: int) -> tuple[list, list]:
    """A seeded split: round(fraction · n) examples (at least 1 when fraction > 0 and n >= 2) for validation."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
    n = len(examples)
    n_val = 0 if fraction == 0 or n < 2 else max(1, round(fraction * n))
    val = set(np.random.default_rng(seed).permutation(n)[:n_val].tolist())
    return [e for i, e in enumerate(examples) if i not in val], [e for i, e in enumerate(examples) if i in val]


def _load_weights(files):
    """(config, canonical float weights) of the resolved model; a GGUF file cannot be trained."""
    if files.layout == "gguf":
        raise InputError(f"{files.weights}: a GGUF file holds quantized inference weights; fine-tune the original checkpoint")
    if files.layout == "mlx":
        import mlx.core as mx
        from csm_mlx.convert import load_model
        from mlx.utils import tree_flatten

        model = load_model(files.weights)
        if getattr(model, "quantization", None):
            raise InputError(f"{files.weights}: quantized MLX weights cannot be fine-tuned; use the float checkpoint")
        return model.config, {k: np.array(v.astype(mx.float32)) for k, v in tree_flatten(model.parameters())}
    from csm_core.weights import load_csm_checkpoint

    return load_csm_checkpoint(files.weights)


def finetune(data: str | Path, model: str, out: str | Path, *, train_config, dtype: str = "bfloat16",
             val_fraction: float = 0.1, cache_dir: str | Path | None = None, resume: bool = False,
             mimi=None, tokenizer=None, offline: bool = False, log: Callable[[str], None] = print) -> dict:  # fmt: skip
    """Check and encode the dataset, then train; returns {"rows", "train", "val", "out", "result"}."""
    from csm_tokenizers import load_tokenizer

    from .audio_io import read_context_audio
    from .discovery import resolve_model
    from .facade import load_codec

    out = Path(out)
    rows = read_dataset(data)  # fails on a malformed file before any model is loaded
    files = resolve_model(model, mimi=mimi, tokenizer=tokenizer, offline=offline)
    config, weights = _load_weights(files)
    tok = load_tokenizer(files.tokenizer)
    codec = load_codec(files.mimi, files.config)
    cache = CodeCache(Path(cache_dir) if cache_dir else out / "codes", codec, config.audio_num_codebooks,
                      f"{Path(files.mimi).resolve()}:{Path(files.mimi).stat().st_size}", read_context_audio)

    def progress(done: int, total: int) -> None:
        if done == total or done % 10 == 0:
            log(f"audio: {done}/{total} rows ready ({cache.encoded} encoded, {cache.hits} from the cache)")

    examples = build_examples(rows, tok, cache, config, progress)
    train, val = split_validation(examples, val_fraction, train_config.seed)
    log(f"{len(train)} training and {len(val)} validation sequences, {sum(len(e.tokens) for e in train)} training frames")

    from csm_mlx.model import CSMModel
    from csm_mlx.training.trainer import Trainer

    net = CSMModel(config).load_canonical(weights, dtype)
    del weights
    trainer = Trainer(net, train, val, train_config, out, log=log)
    trainer.run(resume=resume)
    result = out / ("adapter" if train_config.lora is not None else "model")
    log(f"wrote {result} and {out / 'loss.csv'}")
    return {"rows": len(rows), "train": len(train), "val": len(val), "out": out, "result": result,
            "peak_memory": trainer.peak_memory}


# ---- the `csm finetune` command's options (cli.py holds only the command) ----

def cli_options(fn):
    """click options of `csm finetune` (imported by cli.py)."""
    import click

    opts = [
        click.option("--model", "-m", required=True, help="Base model: directory, file or Hugging Face repo id."),
        click.option("--out", "-o", "out", required=True, type=click.Path(file_okay=False), help="Output directory."),
        click.option("--method", type=click.Choice(["lora", "full"]), default="lora", show_default=True),
        click.option("--rank", type=click.IntRange(min=1), default=16, show_default=True, help="LoRA rank."),
        click.option("--alpha", type=float, default=32.0, show_default=True, help="LoRA alpha (scale alpha/rank)."),
        click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True),
        click.option("--targets", default=DEFAULT_TARGETS, show_default=True, help="LoRA targets among q,k,v,o,gate,up,down."),
        click.option("--modules", default="backbone,decoder", show_default=True, help="Transformers that get adapters."),
        click.option("--train-embeddings", is_flag=True, help="LoRA: also train the text and audio embeddings fully."),
        click.option("--train-heads", is_flag=True, help="LoRA: also train codebook0_head, audio_head and projection."),
        click.option("--steps", type=click.IntRange(min=1), default=1000, show_default=True, help="Optimizer steps."),
        click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True),
        click.option("--grad-accum", type=click.IntRange(min=1), default=1, show_default=True),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-4, show_default=True),
        click.option("--warmup", type=click.IntRange(min=0), default=50, show_default=True),
        click.option("--weight-decay", type=click.FloatRange(min=0), default=0.0, show_default=True),
        click.option("--max-grad-norm", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True),
        click.option("--decoder-fraction", type=click.FloatRange(0, 1, min_open=True), default=1 / 16, show_default=True,
                     help="Share of audio frames the depth decoder trains on (compute amortization)."),
        click.option("--dtype", type=click.Choice(["bfloat16", "float32", "float16"]), default="bfloat16", show_default=True,
                     help="Model weights; optimizer state is always float32."),
        click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.1, show_default=True),
        click.option("--eval-every", type=click.IntRange(min=1), default=50, show_default=True),
        click.option("--save-every", type=click.IntRange(min=1), default=100, show_default=True),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--resume", is_flag=True, help="Continue from the last checkpoint in --out."),
        click.option("--cache", "cache_dir", type=click.Path(file_okay=False), help="Mimi codes cache (default OUT/codes)."),
        click.option("--mimi", type=click.Path(dir_okay=False), help="Mimi checkpoint."),
        click.option("--tokenizer", type=click.Path(), help="tokenizer.json or tokenizer.model."),
        click.option("--offline", is_flag=True, help="Never download; use only local files."),
        click.option("-v", "--verbose", count=True),
        click.option("-q", "--quiet", is_flag=True),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _names(value: str, what: str, known) -> tuple[str, ...]:
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise InputError(f"--{what}: unknown {', '.join(bad) or 'empty list'}; expected some of {', '.join(known)}")
    return names


def run_cli(data, *, model, out, method, rank, alpha, dropout, targets, modules, train_embeddings, train_heads, steps,
            batch_size, grad_accum, lr, warmup, weight_decay, max_grad_norm, decoder_fraction, dtype, val_fraction,
            eval_every, save_every, seed, resume, cache_dir, mimi, tokenizer, offline, verbose, quiet) -> dict:  # fmt: skip
    """`csm finetune` after click parsed it."""
    import sys

    try:
        from csm_mlx.training.lora import MODULES, TARGETS, LoraConfig
        from csm_mlx.training.trainer import TrainConfig
    except ImportError as e:
        raise RuntimeError(f"csm finetune trains with MLX: pip install 'csm-app[mlx]' ({e})") from None

    lora = None
    if method == "lora":
        train = tuple(g for g, on in (("embeddings", train_embeddings), ("heads", train_heads)) if on)
        lora = LoraConfig(rank=rank, alpha=alpha, dropout=dropout, targets=_names(targets, "targets", TARGETS),
                          modules=_names(modules, "modules", MODULES), train=train)
    tc = TrainConfig(steps=steps, batch_size=batch_size, grad_accum=grad_accum, lr=lr, warmup=min(warmup, steps),
                     weight_decay=weight_decay, max_grad_norm=max_grad_norm, decoder_fraction=decoder_fraction,
                     eval_every=eval_every, save_every=save_every, seed=seed, lora=lora)

    def log(msg: str) -> None:
        if not quiet:
            print(f"csm: {msg}", file=sys.stderr, flush=True)

    return finetune(data, model, out, train_config=tc, dtype=dtype, val_fraction=val_fraction, cache_dir=cache_dir,
                    resume=resume, mimi=mimi, tokenizer=tokenizer, offline=offline, log=log)
