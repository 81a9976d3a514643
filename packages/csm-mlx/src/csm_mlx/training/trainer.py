"""The fine-tuning loop: LoRA or full, AdamW on float32 state, gradient accumulation and clipping,
validation, checkpoints every N steps and an exact resume, a CSV loss curve (and a PNG when
matplotlib is installed).

Everything random is a function of (seed, step, micro-batch): the data order (a fresh permutation
per epoch), the amortization mask and the dropout key. So a run resumed from a checkpoint computes
the same steps, and the same losses, as one that was never interrupted.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from ..model import CSMModel
from .lora import LoraConfig, apply_lora, save_adapter
from .loss import amortize, csm_loss, frame_labels
from .optim import AdamW, clip_by_global_norm, lr_at

__all__ = ["Example", "TrainConfig", "Trainer", "collate", "CSV_COLUMNS", "read_curve", "plot_curve"]

CSV_COLUMNS = ("step", "lr", "loss", "backbone_loss", "decoder_loss", "grad_norm",
               "val_loss", "val_backbone_loss", "val_decoder_loss", "frames", "seconds")
SESAME_DECODER_FRACTION = 1 / 16


@dataclass(frozen=True)
class Example:
    """One training sequence: tokens int / mask bool [S, K+1] (context turns, then the target turn)."""

    tokens: np.ndarray
    mask: np.ndarray
    name: str = ""


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 1
    grad_accum: int = 1
    lr: float = 1e-4
    warmup: int = 0
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    max_grad_norm: float | None = 1.0
    decoder_fraction: float = SESAME_DECODER_FRACTION  # compute amortization: frames the decoder trains on
    eval_every: int = 50
    save_every: int = 100
    keep_checkpoints: int = 2
    seed: int = 0
    lora: LoraConfig | None = None  # None: full fine-tuning

    def __post_init__(self):
        for name in ("steps", "batch_size", "grad_accum", "eval_every", "save_every", "keep_checkpoints"):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if not 0.0 < self.decoder_fraction <= 1.0:
            raise ValueError(f"decoder_fraction must be in (0, 1], got {self.decoder_fraction}")
        if self.lr <= 0 or self.warmup < 0:
            raise ValueError(f"lr must be > 0 and warmup >= 0, got lr={self.lr}, warmup={self.warmup}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lora"] = asdict(self.lora) if self.lora else None
        return d


def collate(examples: Sequence[Example]) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad to the longest: padding rows have an all-False mask (causal attention never lets a
    real position see a later pad, so no attention mask is needed) and get no labels."""
    S = max(e.tokens.shape[0] for e in examples)
    K1 = examples[0].tokens.shape[1]
    tokens = np.zeros((len(examples), S, K1), np.int32)
    mask = np.zeros((len(examples), S, K1), bool)
    for i, e in enumerate(examples):
        tokens[i, : len(e.tokens)], mask[i, : len(e.mask)] = e.tokens, e.mask
    return tokens, mask


@dataclass
class _Row:
    values: dict = field(default_factory=dict)


class Trainer:
    """``Trainer(model, train, val, cfg, out_dir).run(resume=...)``; the model is trained in place in its own dtype."""

    def __init__(self, model: CSMModel, train: Sequence[Example], val: Sequence[Example], cfg: TrainConfig,
                 out_dir: str | Path, log: Callable[[str], None] = print):  # fmt: skip
        if not train:
            raise ValueError("no training examples")
        self.model, self.train, self.val, self.cfg, self.log = model, list(train), list(val), cfg, log
        self.out = Path(out_dir)
        self.ckpt_dir = self.out / "checkpoints"
        self.dtype = model.dtype
        if cfg.lora is not None:
            apply_lora(model, cfg.lora, seed=cfg.seed)
        else:
            model.unfreeze()
        self.opt = AdamW(dict(tree_flatten(model.trainable_parameters())), cfg.betas, weight_decay=cfg.weight_decay)
        self._loss_and_grad = nn.value_and_grad(model, self._loss)
        self.start_step = 0
        self.rows: list[dict] = []

    # ---- data ----
    def _examples(self, step: int, micro: int) -> list[Example]:
        """The micro-batch at (step, micro): consecutive places of an endless stream, a new permutation per epoch."""
        cfg, n = self.cfg, len(self.train)
        start = (step * cfg.grad_accum + micro) * cfg.batch_size
        out = []
        for i in range(start, start + cfg.batch_size):
            epoch, place = divmod(i, n)
            perm = np.random.default_rng([cfg.seed, epoch]).permutation(n)
            out.append(self.train[perm[place]])
        return out

    def _loss(self, tokens, mask, labels):
        t = csm_loss(self.model, tokens, mask, labels)
        return t.loss, (t.backbone, t.decoder)

    # ---- steps ----
    def train_step(self, step: int) -> dict:
        cfg = self.cfg
        grads, totals, frames = None, np.zeros(3), 0
        for micro in range(cfg.grad_accum):
            tokens, mask = collate(self._examples(step, micro))
            labels = amortize(frame_labels(tokens, mask), cfg.decoder_fraction, np.random.default_rng([cfg.seed, step, micro, 1]))
            mx.random.seed(int(np.random.default_rng([cfg.seed, step, micro, 2]).integers(2**31)))  # LoRA dropout
            (loss, (bb, dec)), g = self._loss_and_grad(tokens, mask, labels)
            g = dict(tree_flatten(g))
            grads = g if grads is None else {k: grads[k] + g[k] for k in grads}
            mx.eval(loss, bb, dec, grads)
            totals += [float(loss), float(bb), float(dec)]
            frames += int(mask.any(-1).sum())
        if cfg.grad_accum > 1:
            grads = {k: v / cfg.grad_accum for k, v in grads.items()}
        grads, norm = clip_by_global_norm(grads, cfg.max_grad_norm)
        lr = lr_at(step, cfg.lr, cfg.warmup, cfg.steps, cfg.min_lr_ratio)
        self.model.update(tree_unflatten(list(self.opt.step(grads, lr).items())))
        mx.eval(self.model.parameters(), self.opt.state())
        loss, bb, dec = totals / cfg.grad_accum
        return {"step": step + 1, "lr": lr, "loss": loss, "backbone_loss": bb, "decoder_loss": dec,
                "grad_norm": float(norm), "frames": frames}

    def evaluate(self) -> tuple[float, float, float] | None:
        """Mean validation loss over the validation examples (every frame trains the decoder: deterministic)."""
        if not self.val:
            return None
        sums, bs = np.zeros(3), self.cfg.batch_size
        batches = [self.val[i : i + bs] for i in range(0, len(self.val), bs)]
        for batch in batches:
            tokens, mask = collate(batch)
            t = csm_loss(self.model, tokens, mask, frame_labels(tokens, mask))
            mx.eval(t.loss, t.backbone, t.decoder)
            sums += [float(t.loss), float(t.backbone), float(t.decoder)]
        return tuple(sums / len(batches))

    # ---- run ----
    def run(self, resume: bool = False) -> list[dict]:
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        if resume:
            self._resume()
        elif self.ckpt_dir.exists() and any(self.ckpt_dir.iterdir()):
            raise FileExistsError(f"{self.out} holds checkpoints of an earlier run; resume it or pick another directory")
        (self.out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        mx.reset_peak_memory()
        t0 = time.perf_counter()
        for step in range(self.start_step, cfg.steps):
            row = self.train_step(step)
            last = step + 1 == cfg.steps
            if (step + 1) % cfg.eval_every == 0 or last:
                ev = self.evaluate()
                if ev is not None:
                    row.update(val_loss=ev[0], val_backbone_loss=ev[1], val_decoder_loss=ev[2])
            row["seconds"] = time.perf_counter() - t0
            self.rows.append(row)
            self._write_csv()
            val = f", val {row['val_loss']:.4f}" if "val_loss" in row else ""
            self.log(f"step {row['step']}/{cfg.steps}: loss {row['loss']:.4f} (backbone {row['backbone_loss']:.4f}, "
                     f"decoder {row['decoder_loss']:.4f}){val}, lr {row['lr']:.2e}")
            if (step + 1) % cfg.save_every == 0 or last:
                self.save_checkpoint(step + 1)
        self.peak_memory = mx.get_peak_memory()
        self.save_result()
        plot_curve(self.out / "loss.csv", self.out / "loss.png", self.log)
        return self.rows

    # ---- files ----
    def _write_csv(self) -> None:
        tmp = self.out / "loss.csv.tmp"
        with tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, CSV_COLUMNS)
            w.writeheader()
            for r in self.rows:
                w.writerow({k: ("" if r.get(k) is None else r[k]) for k in CSV_COLUMNS})
        tmp.replace(self.out / "loss.csv")

    def save_checkpoint(self, step: int) -> Path:
        path = self.ckpt_dir / f"step_{step:07d}"
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        mx.save_safetensors(str(tmp / "optimizer.safetensors"), self.opt.state())
        (tmp / "state.json").write_text(json.dumps({"step": step, "adam_t": self.opt.t, "config": self.cfg.to_dict()}) + "\n")
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
        for old in sorted(p for p in self.ckpt_dir.glob("step_*") if not p.name.endswith(".tmp"))[: -self.cfg.keep_checkpoints]:
            shutil.rmtree(old)
        return path

    def _resume(self) -> None:
        ckpts = sorted(p for p in self.ckpt_dir.glob("step_*") if (p / "state.json").is_file() and not p.name.endswith(".tmp"))
        if not ckpts:
            self.log(f"no checkpoint under {self.ckpt_dir}; starting from step 0")
            return
        path = ckpts[-1]
        state = json.loads((path / "state.json").read_text())
        saved = {k: v for k, v in state["config"].items() if k not in ("steps", "eval_every", "save_every", "keep_checkpoints")}
        now = {k: v for k, v in json.loads(json.dumps(self.cfg.to_dict())).items() if k in saved}
        if saved != now:
            diff = sorted(k for k in saved if saved[k] != now.get(k))
            raise ValueError(f"{path}: checkpoint was written with other training options ({', '.join(diff)}); "
                             "resume with the same options")
        self.opt.load_state(mx.load(str(path / "optimizer.safetensors")), state["adam_t"])
        self.model.update(tree_unflatten(list(self.opt.params().items())))
        mx.eval(self.model.parameters())
        self.start_step = state["step"]
        self.rows = [r for r in read_curve(self.out / "loss.csv") if r["step"] <= self.start_step]
        self.log(f"resumed from {path} (step {self.start_step})")

    def save_result(self) -> Path:
        """LoRA: ``out/adapter`` (see lora.save_adapter); full: ``out/model`` (canonical safetensors + config.json)."""
        if self.cfg.lora is not None:
            return save_adapter(self.model, self.out / "adapter", {"train_config": self.cfg.to_dict()})
        d = self.out / "model"
        d.mkdir(parents=True, exist_ok=True)
        arrays = dict(tree_flatten(self.model.parameters()))
        mx.save_safetensors(str(d / "model.safetensors"), arrays, metadata={"format": "pt"})
        (d / "config.json").write_text(json.dumps(self.model.config.to_dict(), indent=2) + "\n")
        return d


def read_curve(path: str | Path) -> list[dict]:
    """The rows of a loss.csv (numbers parsed; empty cells dropped)."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="") as f:
        for r in csv.DictReader(f):
            row = {k: (int(v) if k in ("step", "frames") else float(v)) for k, v in r.items() if v != ""}
            rows.append(row)
    return rows


def plot_curve(csv_path: Path, png_path: Path, log: Callable[[str], None] = print) -> Path | None:
    """Plot train (and validation) loss against step; skipped with a notice when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log(f"matplotlib is not installed: wrote {csv_path} but no plot (pip install matplotlib for {png_path.name})")
        return None
    rows = read_curve(csv_path)
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (("loss", "train"), ("val_loss", "validation")):
        pts = [(r["step"], r[key]) for r in rows if key in r and math.isfinite(r[key])]
        if pts:
            ax.plot(*zip(*pts), label=label, marker="o" if key == "val_loss" else None)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (backbone + decoder)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path
