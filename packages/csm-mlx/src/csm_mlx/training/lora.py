"""LoRA for the CSM transformers: y = W x + (alpha / r) · B A dropout(x), A [r, in], B [out, r] (PEFT's form).

Targets are named as transformers names the projections (q, k, v, o, gate, up, down) and map to the
canonical attribute names (attn.q_proj … attn.output_proj, mlp.w1 / w3 / w2). B starts at zero, so
a fresh adapter leaves the model unchanged. An adapter directory holds ``adapter.safetensors``
(lora_a / lora_b per wrapped layer under its canonical weight name, plus any fully trained tensor)
and ``adapter_config.json`` (rank, alpha, targets and the base model's shapes, checked at load).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from csm_core.config import CSMConfig

from .adapter_files import ADAPTER_FILE, CONFIG_FILE, FORMAT, AdapterError, merge_adapter, read_adapter_meta, shape_fingerprint

__all__ = [
    "TARGETS", "MODULES", "LoraConfig", "LoRALinear", "AdapterError", "apply_lora", "lora_layers",
    "merge_lora", "save_adapter", "load_adapter", "attach_adapter", "merge_adapter_weights",
]

# transformers' projection names → canonical attribute paths inside a TransformerBlock
TARGETS = {
    "q": "attn.q_proj", "k": "attn.k_proj", "v": "attn.v_proj", "o": "attn.output_proj",
    "gate": "mlp.w1", "up": "mlp.w3", "down": "mlp.w2",
}
MODULES = ("backbone", "decoder")
EXTRA_TRAINABLE = {  # optional fully trained tensors (canonical names)
    "embeddings": ("text_embeddings.weight", "audio_embeddings.weight"),
    "heads": ("codebook0_head.weight", "audio_head", "projection.weight"),
}


@dataclass
class LoraConfig:
    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("q", "k", "v", "o", "gate", "up", "down")
    modules: tuple[str, ...] = MODULES
    train: tuple[str, ...] = ()  # subset of EXTRA_TRAINABLE: "embeddings", "heads"

    def __post_init__(self):
        self.targets, self.modules, self.train = tuple(self.targets), tuple(self.modules), tuple(self.train)
        if isinstance(self.rank, bool) or int(self.rank) != self.rank or self.rank < 1:
            raise ValueError(f"LoRA rank must be an integer >= 1, got {self.rank!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        for name, given, known in (("target", self.targets, TARGETS), ("module", self.modules, MODULES),
                                   ("trainable group", self.train, EXTRA_TRAINABLE)):
            bad = [g for g in given if g not in known]
            if bad or (name != "trainable group" and not given):
                raise ValueError(f"unknown LoRA {name}(s) {bad or given}; expected some of {', '.join(known)}")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


class LoRALinear(nn.Module):
    """Wraps a (possibly quantized) linear layer; only lora_a / lora_b are meant to train."""

    def __init__(self, base: nn.Module, rank: int, scale: float, dropout: float, key: mx.array | None = None):
        super().__init__()
        out_dim, in_dim = base.weight.shape[0], _in_dim(base)
        self.base = base
        self.scale, self.dropout = scale, nn.Dropout(dropout) if dropout > 0 else None
        bound = 1.0 / math.sqrt(in_dim)  # PEFT: kaiming_uniform(a=sqrt(5)) on A, zeros on B
        dtype = mx.float32 if isinstance(base, nn.QuantizedLinear) else base.weight.dtype
        self.lora_a = mx.random.uniform(-bound, bound, (rank, in_dim), key=key).astype(dtype)
        self.lora_b = mx.zeros((out_dim, rank), self.lora_a.dtype)

    def __call__(self, x: mx.array) -> mx.array:
        y = self.base(x)
        z = self.dropout(x) if self.dropout is not None else x
        z = (z @ self.lora_a.astype(x.dtype).T) @ self.lora_b.astype(x.dtype).T
        return y + (self.scale * z).astype(y.dtype)

    def delta(self) -> mx.array:
        """scale · B A [out, in] in float32: what merging adds to the base weight."""
        return self.scale * (self.lora_b.astype(mx.float32) @ self.lora_a.astype(mx.float32))


def _in_dim(base: nn.Module) -> int:
    if isinstance(base, nn.QuantizedLinear):
        return base.weight.shape[1] * 32 // base.bits
    return base.weight.shape[1]


def _targets(model, cfg: LoraConfig):
    for module in cfg.modules:
        for i, layer in enumerate(getattr(model, module).layers):
            for t in cfg.targets:
                parent, attr = TARGETS[t].split(".")
                yield f"{module}.layers.{i}.{TARGETS[t]}", getattr(layer, parent), attr


def apply_lora(model, cfg: LoraConfig, seed: int = 0) -> list[str]:
    """Wrap the targeted layers in place; freeze everything but the adapters (and cfg.train groups).
    Returns the canonical weight names (without ``.weight``) of the wrapped layers."""
    key = mx.random.key(seed)
    names = []
    model.freeze()
    for name, parent, attr in _targets(model, cfg):
        key, sub = mx.random.split(key)
        base = getattr(parent, attr)
        if isinstance(base, LoRALinear):
            raise AdapterError(f"{name} already carries a LoRA adapter")
        setattr(parent, attr, LoRALinear(base, cfg.rank, cfg.scale, cfg.dropout, sub))
        names.append(name)
    for group in cfg.train:
        for tensor in EXTRA_TRAINABLE[group]:
            module, _, pname = tensor.rpartition(".")
            _module(model, module).unfreeze(keys=[pname], recurse=False)
    model.lora_config = cfg
    return names


def _module(model, path: str):
    m = model
    for part in filter(None, path.split(".")):
        m = m[int(part)] if isinstance(m, list) else getattr(m, part)
    return m


def lora_layers(model) -> dict[str, LoRALinear]:
    """Canonical layer name (e.g. ``backbone.layers.0.attn.q_proj``) → its LoRALinear."""
    return {p: m for p, m in model.named_modules() if isinstance(m, LoRALinear)}


def merge_lora(model) -> None:
    """Fold every adapter into its base weight (float bases only) and unwrap the layers."""
    for name, layer in lora_layers(model).items():
        if isinstance(layer.base, nn.QuantizedLinear):
            raise AdapterError(f"{name}: cannot merge an adapter into a quantized layer; merge before quantizing")
        w = layer.base.weight
        layer.base.weight = (w.astype(mx.float32) + layer.delta()).astype(w.dtype)
        parent, _, attr = name.rpartition(".")
        setattr(_module(model, parent), attr, layer.base)
    mx.eval(model.parameters())


# ---- files ----

def save_adapter(model, directory: str | Path, extra: Mapping[str, object] | None = None) -> Path:
    """Write the adapters (float32) and the trained extra tensors of ``model`` to ``directory``."""
    cfg: LoraConfig = model.lora_config
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for name, layer in lora_layers(model).items():
        arrays[f"{name}.lora_a"] = layer.lora_a.astype(mx.float32)
        arrays[f"{name}.lora_b"] = layer.lora_b.astype(mx.float32)
    for group in cfg.train:
        for tensor in EXTRA_TRAINABLE[group]:
            arrays[tensor] = _module(model, tensor.rpartition(".")[0])[tensor.rpartition(".")[2]].astype(mx.float32)
    tmp = directory / (ADAPTER_FILE + ".tmp.safetensors")
    mx.save_safetensors(str(tmp), arrays, metadata={"format": FORMAT})
    tmp.replace(directory / ADAPTER_FILE)
    meta = {"format": FORMAT, "lora": asdict(cfg), "base_config": model.config.to_dict(),
            "base_shapes": shape_fingerprint(model.config), **(dict(extra) if extra else {})}
    (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return directory


@dataclass
class Adapter:
    config: LoraConfig
    arrays: dict[str, mx.array]  # float32
    path: Path
    meta: dict = field(default_factory=dict)


def load_adapter(directory: str | Path, config: CSMConfig | None = None) -> Adapter:
    """Read an adapter directory; with ``config``, check it was made for a model of that shape."""
    directory = Path(directory)
    meta = read_adapter_meta(directory, config)
    try:
        lcfg = LoraConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["lora"].items()})
    except (ValueError, TypeError) as e:
        raise AdapterError(f"{directory / CONFIG_FILE}: malformed LoRA options: {e}") from None
    arrays = mx.load(str(directory / ADAPTER_FILE))
    return Adapter(lcfg, {k: v.astype(mx.float32) for k, v in arrays.items()}, directory, meta)


def attach_adapter(model, adapter: Adapter) -> None:
    """Apply a loaded adapter to a model (inference: dropout off): wrap, then set A, B and extras."""
    cfg = LoraConfig(**{**asdict(adapter.config), "dropout": 0.0})
    if cfg.train and getattr(model, "quantization", None):
        raise AdapterError(f"{adapter.path}: this adapter also retrained {', '.join(cfg.train)}, which a quantized model "
                           "cannot take; merge it into float weights (csm convert --merge-adapter) and quantize after")
    names = apply_lora(model, cfg)
    layers = lora_layers(model)
    expected = {f"{n}.lora_{ab}" for n in names for ab in "ab"}
    expected |= {t for g in cfg.train for t in EXTRA_TRAINABLE[g]}
    missing, extra = sorted(expected - set(adapter.arrays)), sorted(set(adapter.arrays) - expected)
    if missing or extra:
        raise AdapterError(f"{adapter.path}: adapter tensors do not match its config: missing {missing[:3]}, unexpected {extra[:3]}")
    for name, layer in layers.items():
        a, b = adapter.arrays[f"{name}.lora_a"], adapter.arrays[f"{name}.lora_b"]
        if a.shape != layer.lora_a.shape or b.shape != layer.lora_b.shape:
            raise AdapterError(f"{adapter.path}: {name}: adapter shapes {a.shape}/{b.shape}, model needs "
                               f"{layer.lora_a.shape}/{layer.lora_b.shape}")
        layer.lora_a, layer.lora_b = a, b
    dt = model.dtype
    for group in cfg.train:
        for tensor in EXTRA_TRAINABLE[group]:
            parent, _, pname = tensor.rpartition(".")
            _module(model, parent)[pname] = adapter.arrays[tensor].astype(dt)
    model.freeze()
    mx.eval(model.parameters())


def merge_adapter_weights(weights: Mapping[str, np.ndarray], adapter: Adapter) -> dict[str, np.ndarray]:
    """A canonical weight dict with the adapter merged (see adapter_files.merge_adapter)."""
    return merge_adapter(weights, adapter.path)
