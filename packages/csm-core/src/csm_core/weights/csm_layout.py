"""CSM checkpoint layouts: the original Sesame names (canonical) and Hugging Face `CsmForConditionalGeneration`.

Renames follow transformers' `convert_csm.py` (spec/csm.md §4). Hugging Face q_proj/k_proj rows
are in half-split RoPE order; canonical ones are interleaved, so they are permuted on the way in
and out. The audio embedding table is tied in HF: the hub shards hold both copies
(`backbone_model.embed_tokens.embed_audio_tokens.weight` and `depth_decoder.model.embed_tokens.weight`),
`save_pretrained` writes only the second. The Mimi codec rides along as `codec_model.*`.
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping

import numpy as np

from ..config import CSMConfig, LlamaConfig
from .errors import CheckpointError
from .rope_permute import half_to_interleaved, interleaved_to_half

__all__ = [
    "detect_csm_layout",
    "csm_hf_to_canonical",
    "csm_canonical_to_hf",
    "split_codec",
    "strip_wrapper_prefix",
    "HF_AUDIO_EMBED_NAMES",
    "CODEC_PREFIX",
]

CODEC_PREFIX = "codec_model."

# HF stack prefix -> canonical stack prefix.
_STACKS = {"backbone_model": "backbone", "depth_decoder.model": "decoder"}
# HF per-layer suffix -> canonical per-layer suffix.
_LAYER = {
    "self_attn.q_proj.weight": "attn.q_proj.weight",
    "self_attn.k_proj.weight": "attn.k_proj.weight",
    "self_attn.v_proj.weight": "attn.v_proj.weight",
    "self_attn.o_proj.weight": "attn.output_proj.weight",
    "mlp.gate_proj.weight": "mlp.w1.weight",
    "mlp.down_proj.weight": "mlp.w2.weight",
    "mlp.up_proj.weight": "mlp.w3.weight",
    "input_layernorm.weight": "sa_norm.scale",
    "post_attention_layernorm.weight": "mlp_norm.scale",
}
_TOP = {
    "embed_text_tokens.weight": "text_embeddings.weight",
    "lm_head.weight": "codebook0_head.weight",
    "backbone_model.norm.weight": "backbone.norm.scale",
    "depth_decoder.model.norm.weight": "decoder.norm.scale",
    "depth_decoder.model.inputs_embeds_projector.weight": "projection.weight",
    "depth_decoder.codebooks_head.weight": "audio_head",  # [K-1, Dd, V] in both layouts
}
# The two tied copies of canonical `audio_embeddings.weight` [V*K, Db].
HF_AUDIO_EMBED_NAMES = ("backbone_model.embed_tokens.embed_audio_tokens.weight", "depth_decoder.model.embed_tokens.weight")

_HF_LAYER_RE = re.compile(r"^(backbone_model|depth_decoder\.model)\.layers\.(\d+)\.(.+)$")
_CANON_LAYER_RE = re.compile(r"^(backbone|decoder)\.layers\.(\d+)\.(.+)$")


def detect_csm_layout(names: Iterable[str], source: str = "checkpoint") -> str:
    """'original' (Sesame names) or 'hf' (transformers names), decided by key names."""
    names = set(names)
    hf = "embed_text_tokens.weight" in names or any(n.startswith(("backbone_model.", "depth_decoder.")) for n in names)
    orig = "text_embeddings.weight" in names or any(n.startswith(("backbone.layers.", "decoder.layers.")) for n in names)
    if hf and orig:
        raise CheckpointError(f"{source}: holds both original-Sesame and Hugging Face CSM tensor names; cannot tell its layout")
    if hf:
        return "hf"
    if orig:
        return "original"
    raise CheckpointError(
        f"{source}: not a CSM checkpoint (no 'text_embeddings.weight' / 'backbone.layers.*' of the original release "
        f"nor 'embed_text_tokens.weight' / 'backbone_model.*' of Hugging Face); first names: {sorted(names)[:6]}"
    )


# Prefixes training wrappers add to every key: DistributedDataParallel, torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def strip_wrapper_prefix(weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Drop a `module.` / `_orig_mod.` prefix carried by every key (fine-tuning checkpoints)."""
    out = dict(weights)
    for prefix in _WRAPPER_PREFIXES:
        if out and all(k.startswith(prefix) for k in out):
            out = {k[len(prefix) :]: v for k, v in out.items()}
    return out


def split_codec(weights: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(CSM tensors, codec tensors with the `codec_model.` prefix removed)."""
    csm, codec = {}, {}
    for k, v in weights.items():
        if k.startswith(CODEC_PREFIX):
            codec[k[len(CODEC_PREFIX) :]] = v
        else:
            csm[k] = v
    return csm, codec


def _heads(cfg: LlamaConfig, proj: str) -> int:
    return cfg.num_heads if proj.startswith("q_proj") else cfg.num_kv_heads


def csm_hf_to_canonical(
    weights: Mapping[str, np.ndarray], config: CSMConfig, source: str = "checkpoint"
) -> dict[str, np.ndarray]:
    """HF CSM tensors -> canonical names; q/k rows half-split -> interleaved.

    `codec_model.*` tensors are dropped (read them with the Mimi loader). Names that map to
    nothing are kept as they are, so that `validate_weights` reports them as unexpected.
    """
    stacks = {"backbone": config.backbone, "decoder": config.decoder}
    out: dict[str, np.ndarray] = {}
    for name, w in weights.items():
        if name.startswith(CODEC_PREFIX) or name in HF_AUDIO_EMBED_NAMES:
            continue
        m = _HF_LAYER_RE.match(name)
        if m and m.group(3) in _LAYER:
            stack = _STACKS[m.group(1)]
            suffix = _LAYER[m.group(3)]
            if suffix in ("attn.q_proj.weight", "attn.k_proj.weight"):
                cfg = stacks[stack]
                w = half_to_interleaved(w, _heads(cfg, suffix[5:]), cfg.head_dim, f"{source}: {name}")
            out[f"{stack}.layers.{m.group(2)}.{suffix}"] = w
        else:
            out[_TOP.get(name, name)] = w

    copies = [n for n in HF_AUDIO_EMBED_NAMES if n in weights]
    if copies:
        a = weights[copies[0]]
        if len(copies) == 2:
            b = weights[copies[1]]
            if a.shape != b.shape or not np.array_equal(a, b):
                raise CheckpointError(
                    f"{source}: the tied audio embedding copies differ: {copies[0]} {a.shape} vs {copies[1]} {b.shape}"
                )
        out["audio_embeddings.weight"] = a
    return out


def csm_canonical_to_hf(
    weights: Mapping[str, np.ndarray], config: CSMConfig, *, tied_copies: str = "both"
) -> dict[str, np.ndarray]:
    """Canonical CSM tensors -> HF names; q/k rows interleaved -> half-split.

    tied_copies: "both" writes both audio-embedding names (as the hub shards do), "decoder"
    only `depth_decoder.model.embed_tokens.weight` (as `save_pretrained` does).
    """
    if tied_copies not in ("both", "decoder"):
        raise ValueError(f"tied_copies must be 'both' or 'decoder', got {tied_copies!r}")
    stacks = {"backbone": config.backbone, "decoder": config.decoder}
    inv_stacks = {v: k for k, v in _STACKS.items()}
    inv_layer = {v: k for k, v in _LAYER.items()}
    inv_top = {v: k for k, v in _TOP.items()}
    out: dict[str, np.ndarray] = {}
    for name, w in weights.items():
        m = _CANON_LAYER_RE.match(name)
        if m and m.group(3) in inv_layer:
            stack, suffix = m.group(1), m.group(3)
            if suffix in ("attn.q_proj.weight", "attn.k_proj.weight"):
                cfg = stacks[stack]
                w = interleaved_to_half(w, _heads(cfg, suffix[5:]), cfg.head_dim, name)
            out[f"{inv_stacks[stack]}.layers.{m.group(2)}.{inv_layer[suffix]}"] = w
        elif name == "audio_embeddings.weight":
            names = HF_AUDIO_EMBED_NAMES if tied_copies == "both" else HF_AUDIO_EMBED_NAMES[1:]
            for n in names:
                out[n] = w
        elif name in inv_top:
            out[inv_top[name]] = w
        else:
            raise CheckpointError(f"canonical CSM tensor {name!r} has no Hugging Face name")
    return out
