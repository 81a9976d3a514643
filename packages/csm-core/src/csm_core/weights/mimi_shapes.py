"""Canonical (Kyutai checkpoint) Mimi tensor names and shapes for a MimiConfig (spec/mimi.md §2-§6)."""

from __future__ import annotations

import math

from ..config import MimiConfig

__all__ = [
    "mimi_weight_shapes",
    "is_codebook_buffer",
    "mimi_num_parameters",
    "mimi_num_codebook_values",
    "mimi_convtr_indices",
]

_CODEBOOK_BUFFERS = ("._codebook.embedding_sum", "._codebook.cluster_usage", "._codebook._initialized")


def is_codebook_buffer(name: str) -> bool:
    """True for the RVQ codebook buffers (embedding_sum, cluster_usage, _initialized), which are not parameters."""
    return name.endswith(_CODEBOOK_BUFFERS)


def mimi_convtr_indices(cfg: MimiConfig) -> tuple[int, ...]:
    """`decoder.model.i` indices holding a transposed conv: each ratio adds (ELU, convT, ResBlock)."""
    return tuple(3 * k + 2 for k in range(len(cfg.ratios)))


def _conv(shapes: dict, prefix: str, cin: int, cout: int, k: int) -> None:
    shapes[f"{prefix}.conv.conv.weight"] = (cout, cin, k)  # Conv1d [Cout, Cin, k]
    shapes[f"{prefix}.conv.conv.bias"] = (cout,)


def _resblock(shapes: dict, prefix: str, dim: int, cfg: MimiConfig) -> None:
    hidden = dim // cfg.compress
    _conv(shapes, f"{prefix}.block.1", dim, hidden, cfg.residual_kernel_size)
    _conv(shapes, f"{prefix}.block.3", hidden, dim, 1)


def mimi_weight_shapes(cfg: MimiConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of a Kyutai Mimi checkpoint (parameters and codebook buffers), name -> shape."""
    s: dict[str, tuple[int, ...]] = {}
    nf, n_up = cfg.n_filters, len(cfg.ratios)

    # SEANet encoder: conv, then per ratio (smallest first) ResBlock, ELU, strided conv; ELU, conv.
    _conv(s, "encoder.model.0", cfg.channels, nf, cfg.kernel_size)
    mult, idx = 1, 1
    for r in reversed(cfg.ratios):
        _resblock(s, f"encoder.model.{idx}", mult * nf, cfg)
        _conv(s, f"encoder.model.{idx + 2}", mult * nf, 2 * mult * nf, 2 * r)
        mult, idx = mult * 2, idx + 3
    _conv(s, f"encoder.model.{idx + 1}", mult * nf, cfg.dimension, cfg.last_kernel_size)

    # SEANet decoder: conv, then per ratio ELU, transposed conv, ResBlock; ELU, conv.
    mult = 2**n_up
    _conv(s, "decoder.model.0", cfg.dimension, mult * nf, cfg.kernel_size)
    idx = 1
    for r in cfg.ratios:
        p = f"decoder.model.{idx + 1}.convtr.convtr"
        s[f"{p}.weight"] = (mult * nf, mult * nf // 2, 2 * r)  # ConvTranspose1d [Cin, Cout, k]
        s[f"{p}.bias"] = (mult * nf // 2,)
        _resblock(s, f"decoder.model.{idx + 2}", mult * nf // 2, cfg)
        mult, idx = mult // 2, idx + 3
    _conv(s, f"decoder.model.{idx + 1}", nf, cfg.channels, cfg.last_kernel_size)

    d, ff = cfg.dimension, cfg.dim_feedforward
    for part in ("encoder_transformer", "decoder_transformer"):
        for n in range(cfg.num_transformer_layers):
            p = f"{part}.transformer.layers.{n}"
            s[f"{p}.self_attn.in_proj_weight"] = (3 * d, d)  # rows q|k|v, each (head, dim)
            s[f"{p}.self_attn.out_proj.weight"] = (d, d)
            for norm in ("norm1", "norm2"):
                s[f"{p}.{norm}.weight"] = (d,)
                s[f"{p}.{norm}.bias"] = (d,)
            s[f"{p}.linear1.weight"] = (ff, d)
            s[f"{p}.linear2.weight"] = (d, ff)
            s[f"{p}.layer_scale_1.scale"] = (d,)
            s[f"{p}.layer_scale_2.scale"] = (d,)

    k = 2 * cfg.downsample_stride
    s["downsample.conv.conv.conv.weight"] = (d, d, k)
    s["upsample.convtr.convtr.convtr.weight"] = (d, 1, k)  # depthwise (groups = d)

    for rvq, n_q in (("rvq_first", cfg.num_semantic), ("rvq_rest", cfg.num_codebooks - cfg.num_semantic)):
        s[f"quantizer.{rvq}.input_proj.weight"] = (cfg.codebook_dim, d, 1)
        s[f"quantizer.{rvq}.output_proj.weight"] = (d, cfg.codebook_dim, 1)
        for n in range(n_q):
            p = f"quantizer.{rvq}.vq.layers.{n}._codebook"
            s[f"{p}.embedding_sum"] = (cfg.codebook_size, cfg.codebook_dim)
            s[f"{p}.cluster_usage"] = (cfg.codebook_size,)
            s[f"{p}._initialized"] = (1,)
    return s


def mimi_num_parameters(cfg: MimiConfig) -> int:
    """Trainable parameters (79,308,609 for the released model)."""
    return sum(math.prod(v) for k, v in mimi_weight_shapes(cfg).items() if not is_codebook_buffer(k))


def mimi_num_codebook_values(cfg: MimiConfig) -> int:
    """Values in the codebook buffers (16,842,784 for the released model)."""
    return sum(math.prod(v) for k, v in mimi_weight_shapes(cfg).items() if is_codebook_buffer(k))
