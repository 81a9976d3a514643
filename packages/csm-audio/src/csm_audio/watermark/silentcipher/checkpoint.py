"""SilentCipher's released files: hparams.yaml and the enc_c / dec_c / dec_m_0 checkpoints
(torch zip pickles, read with csm-core's torch-free reader), found in a directory, a snapshot of
the Hugging Face repo `sony/silentcipher`, or a hub cache holding that repo.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from csm_core.weights.errors import CheckpointError
from csm_core.weights.torch_pt import read_torch_checkpoint

from .nets import GatedLayer

__all__ = ["SilentCipherConfig", "SilentCipherWeights", "find_checkpoint_dir", "load_config", "load_weights",
           "FILES", "SUBDIR", "REPO_ID"]

REPO_ID = "sony/silentcipher"
SUBDIR = "44_1_khz/73999_iteration"
FILES = ("hparams.yaml", "enc_c.ckpt", "dec_c.ckpt", "dec_m_0.ckpt")
HOW_TO_GET = (f"get them with `huggingface-cli download {REPO_ID}` (files under {SUBDIR}/; "
              "enc_c.ckpt, dec_c.ckpt, dec_m_0.ckpt and hparams.yaml are needed, opt.ckpt is not)")

# Channel widths fixed in the official model code (not in hparams).
ENC_DIM, DEC_C_DIM, DEC_M_DIM, DEC_M_LAYERS = 32, 96, 128, 10


@dataclass(frozen=True)
class SilentCipherConfig:
    """The hparams the inference path reads (names as in hparams.yaml)."""

    SR: int = 44100
    N_FFT: int = 4096
    HOP_LENGTH: int = 2048
    message_dim: int = 5
    message_len: int = 21
    message_band_size: int = 1024
    message_sdr: float = 47.0
    n_messages: int = 1
    enc_n_layers: int = 3
    dec_c_n_layers: int = 4
    ensure_negative_message: bool = True
    ensure_constrained_message: bool = False
    frame_level_normalization: bool = False
    utterance_level_normalization: bool = True
    no_normalization: bool = False

    @property
    def bins(self) -> int:
        return self.N_FFT // 2 + 1

    @property
    def key_bytes(self) -> int:
        """Payload bytes: message_len - 1 two-bit symbols."""
        return (self.message_len - 1) * 2 // 8


def load_config(path: str | Path) -> SilentCipherConfig:
    """hparams.yaml -> config; keys the inference path does not use are ignored."""
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: SilentCipher hparams file not found; {HOW_TO_GET}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not a readable YAML hparams file ({e})") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: hparams must be a YAML mapping, got {type(raw).__name__}")
    fields = SilentCipherConfig.__dataclass_fields__
    required = ("SR", "N_FFT", "HOP_LENGTH", "message_dim", "message_len", "message_band_size")
    missing = [k for k in required if k not in raw]
    if missing:
        raise CheckpointError(f"{path}: not a SilentCipher hparams file: missing {missing}")
    kw = {}
    for name, f in fields.items():
        if name in raw and raw[name] is not None:
            v = raw[name]
            kw[name] = bool(v) if f.type == "bool" else (float(v) if f.type == "float" else int(v))
    cfg = SilentCipherConfig(**kw)
    if cfg.n_messages != 1:
        raise CheckpointError(f"{path}: n_messages = {cfg.n_messages}; only single-message models are supported")
    if not 0 < cfg.message_band_size <= cfg.bins:
        raise CheckpointError(f"{path}: message_band_size {cfg.message_band_size} outside 1..{cfg.bins} bins")
    return cfg


@dataclass(frozen=True)
class SilentCipherWeights:
    enc: list[GatedLayer]  # enc_c.main
    msg_w: np.ndarray  # enc_c.linear.weight [band, message_dim]
    msg_b: np.ndarray  # enc_c.linear.bias [band]
    dec_c: list[GatedLayer]
    dec_m: list[GatedLayer]
    out_w: np.ndarray  # dec_m linear.weight [band]
    out_b: float


def _layers(sd: dict[str, np.ndarray], path: Path, shapes: list[tuple[int, int, int]]) -> list[GatedLayer]:
    """Gated layers main.<i> in index order (Dropout slots, as in the PyPI MsgDecoder, leave gaps),
    checked against the expected (Cin, Cout, kernel) of each."""
    idx = sorted({int(m.group(1)) for k in sd if (m := re.match(r"main\.(\d+)\.conv\.weight$", k))})
    if len(idx) != len(shapes):
        raise CheckpointError(f"{path}: expected {len(shapes)} gated layers (main.N.conv.weight), found {len(idx)}"
                              f"{'' if idx else ' (not a SilentCipher checkpoint?)'}")
    out = []
    for i, (cin, cout, k) in zip(idx, shapes):
        p = f"main.{i}."
        need = {"conv.weight": (cout, cin, k, k), "conv.bias": (cout,), "gate.weight": (cout, cin, k, k),
                "gate.bias": (cout,), "bn.weight": (cout,), "bn.bias": (cout,)}
        for name, shape in need.items():
            if p + name not in sd:
                raise CheckpointError(f"{path}: tensor {p + name} is missing")
            if sd[p + name].shape != shape:
                raise CheckpointError(f"{path}: tensor {p + name} has shape {sd[p + name].shape}, expected {shape}")
        t = {n: np.asarray(sd[p + n], np.float32) for n in need}
        out.append(GatedLayer.from_torch(t["conv.weight"], t["conv.bias"], t["gate.weight"], t["gate.bias"],
                                         t["bn.weight"], t["bn.bias"]))
    return out


def _read(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise CheckpointError(f"{path}: SilentCipher checkpoint not found; {HOW_TO_GET}")
    sd = read_torch_checkpoint(path)
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}


def _tensor(sd, path, name, shape) -> np.ndarray:
    if name not in sd:
        raise CheckpointError(f"{path}: tensor {name} is missing (not a SilentCipher checkpoint?)")
    if sd[name].shape != shape:
        raise CheckpointError(f"{path}: tensor {name} has shape {sd[name].shape}, expected {shape}")
    return np.asarray(sd[name], np.float32)


def load_weights(directory: str | Path, cfg: SilentCipherConfig) -> SilentCipherWeights:
    d = Path(directory)
    band, mdim = cfg.message_band_size, cfg.message_dim
    p = d / "enc_c.ckpt"
    sd = _read(p)
    enc_shapes = [(1, ENC_DIM, 3)] + [(ENC_DIM, ENC_DIM, 3)] * (cfg.enc_n_layers - 1)
    enc = _layers(sd, p, enc_shapes)
    msg_w = _tensor(sd, p, "linear.weight", (band, mdim))
    msg_b = _tensor(sd, p, "linear.bias", (band,))
    p = d / "dec_c.ckpt"
    sd = _read(p)
    dec_c_shapes = [(3 * ENC_DIM, DEC_C_DIM, 3)] + [(DEC_C_DIM, DEC_C_DIM, 3)] * (cfg.dec_c_n_layers - 2) + [(DEC_C_DIM, 1, 1)]
    dec_c = _layers(sd, p, dec_c_shapes)
    p = d / "dec_m_0.ckpt"
    sd = _read(p)
    dec_m_shapes = [(1, DEC_M_DIM, 3)] + [(DEC_M_DIM, DEC_M_DIM, 3)] * (DEC_M_LAYERS - 2) + [(DEC_M_DIM, mdim, 3)]
    dec_m = _layers(sd, p, dec_m_shapes)
    out_w = _tensor(sd, p, "linear.weight", (1, band))[0]
    out_b = float(_tensor(sd, p, "linear.bias", (1,))[0])
    return SilentCipherWeights(enc, msg_w, msg_b, dec_c, dec_m, out_w, out_b)


def find_checkpoint_dir(path: str | Path | None = None, cache: str | Path | None = None) -> tuple[Path | None, list[str]]:
    """The directory holding the four files, and every place looked at.

    path: that directory, a snapshot of sony/silentcipher (holding 44_1_khz/73999_iteration), or a
    hub cache; else cache (a Hugging Face hub cache directory) is searched for the repo."""
    looked: list[str] = []
    roots: list[Path] = []
    for base in [Path(path).expanduser()] if path is not None else ([Path(cache).expanduser()] if cache else []):
        roots += [base, base / SUBDIR]
        snaps = base / ("models--" + REPO_ID.replace("/", "--")) / "snapshots"
        if base.name == "snapshots":
            snaps = base
        elif base.name.startswith("models--"):
            snaps = base / "snapshots"
        if snaps.is_dir():
            for s in sorted(snaps.iterdir(), key=lambda q: q.stat().st_mtime, reverse=True):
                roots.append(s / SUBDIR)
    for r in roots:
        looked.append(str(r))
        if all((r / f).is_file() for f in FILES):
            return r, looked
    return None, looked
