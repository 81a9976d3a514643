"""Canonical CSM weights -> what the CPU engine reads: quantized matrices, fp32 norms, rope tables.

Tensors are taken one at a time from any mapping (a lazy one keeps peak memory near the size
of the quantized model), checked (name, shape, dtype, finite values) and converted.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from csm_core.config import CSMConfig, LlamaConfig

from . import formats
from .quant import quantize

__all__ = ["WeightError", "prepare_weights", "rope_tables", "engine_dims", "matrix_names"]


class WeightError(ValueError):
    """A weight tensor is missing, extra, misshapen or not finite."""


def rope_tables(cfg: LlamaConfig) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin [max_seq_len, head_dim/2] fp32 of the llama3-scaled frequencies."""
    angles = np.outer(np.arange(cfg.max_seq_len, dtype=np.float32), cfg.inv_freq()).astype(np.float32)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def engine_dims(config: CSMConfig) -> dict:
    def llama(c: LlamaConfig, max_seq_len: int) -> dict:
        return dict(
            num_layers=c.num_layers,
            num_heads=c.num_heads,
            num_kv_heads=c.num_kv_heads,
            embed_dim=c.embed_dim,
            intermediate_dim=c.intermediate_dim,
            max_seq_len=max_seq_len,
            norm_eps=c.norm_eps,
        )

    return dict(
        backbone=llama(config.backbone, config.backbone.max_seq_len),
        # the decoder sees [backbone state, code 0 .. code K-2]: K positions a frame
        decoder=llama(config.decoder, config.audio_num_codebooks),
        audio_vocab=config.audio_vocab_size,
        num_codebooks=config.audio_num_codebooks,
    )


def matrix_names(config: CSMConfig) -> list[str]:
    """Canonical names of the 2-D weights the kernels multiply or look up."""
    return [n for n, s in config.weight_shapes().items() if len(s) == 2]


def _fetch(weights: Mapping[str, np.ndarray], name: str, shape: tuple[int, ...]) -> np.ndarray:
    try:
        t = weights[name]
    except KeyError:
        raise WeightError(f"missing weight {name!r} (expected shape {shape})") from None
    t = np.asarray(t)
    if t.shape != tuple(shape):
        raise WeightError(f"weight {name!r} has shape {t.shape}, expected {tuple(shape)}")
    if not (np.issubdtype(t.dtype, np.floating) or t.dtype.name == "bfloat16"):
        raise WeightError(f"weight {name!r} has dtype {t.dtype}, expected a floating type")
    return t


def prepare_weights(config: CSMConfig, weights: Mapping[str, np.ndarray], fmt: str, *, threads: int = 1) -> dict:
    """Canonical weight mapping -> engine weights {name: QTensor | fp32 array}.

    Tensors are fetched one at a time, largest first, so that with a lazy mapping the peak
    memory is about the quantized model plus the largest source tensor.
    audio_head [K-1, Dd, V] becomes K-1 matrices `audio_head.i` [V, Dd] (rows = output codes).
    Extra names are an error, so a checkpoint of another model never loads half-way.
    """
    f = formats.get(fmt)
    shapes = config.weight_shapes()
    extra = sorted(set(weights.keys()) - set(shapes))
    if extra:
        raise WeightError(f"unexpected weights {extra[:5]}{' ...' if len(extra) > 5 else ''} for this CSM config")
    out: dict = {}
    try:
        for name in sorted(shapes, key=lambda n: -int(np.prod(shapes[n]))):
            shape = shapes[name]
            t = _fetch(weights, name, shape)
            if name == "audio_head":
                for i in range(shape[0]):
                    fmt_i = f.matrix_format(shape[1]).name
                    out[f"audio_head.{i}"] = quantize(t[i].T, fmt_i, name=f"{name}[{i}]", threads=threads)
            elif len(shape) == 1:
                out[name] = np.ascontiguousarray(t, dtype=np.float32)
                if not np.isfinite(out[name]).all():
                    raise WeightError(f"weight {name!r} holds NaN or infinite values")
            elif name.endswith("_embeddings.weight"):
                out[name] = quantize(t, f.embedding, name=name, threads=threads)
            else:
                out[name] = quantize(t, f.matrix_format(shape[1]).name, name=name, threads=threads)
            del t
    except ValueError as e:
        if isinstance(e, WeightError):
            raise
        raise WeightError(str(e)) from None
    add_rope_tables(config, out)
    return out


def add_rope_tables(config: CSMConfig, out: dict) -> None:
    dims = engine_dims(config)
    for prefix, cfg in (("backbone", config.backbone), ("decoder", config.decoder)):
        cos, sin = rope_tables(cfg)
        n = dims[prefix]["max_seq_len"]
        out[f"{prefix}.rope_cos"] = np.ascontiguousarray(cos[:n])
        out[f"{prefix}.rope_sin"] = np.ascontiguousarray(sin[:n])
