"""Mimi checkpoint layouts: Kyutai's original names (canonical) and Hugging Face `MimiModel`.

- "kyutai": `tokenizer-e351c8d8-checkpoint125.safetensors` names (318 tensors); moshi >= 0.2.6's
  in-memory `in_projs.0` / `out_projs.0` attention names are accepted too.
- "hf": the flat `kyutai/mimi` hub layout that `save_pretrained` writes (350 tensors), also found
  as `codec_model.*` in HF CSM checkpoints. Packed `in_proj_weight` [3d, d] is split into
  q/k/v_proj, and q/k rows are in half-split RoPE order (spec/mimi.md §6).
- "hf-nested": transformers 5.x in-memory `MimiModel.state_dict()` names
  (`encoder.encoder_seanet.*`, `decoder.decoder_transformer.*`, ...), normalised to "hf" first.
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping

import numpy as np

from ..config import ConfigError, MimiConfig
from .errors import CheckpointError
from .mimi_shapes import mimi_convtr_indices
from .rope_permute import half_to_interleaved, interleaved_to_half

__all__ = ["detect_mimi_layout", "mimi_hf_to_canonical", "mimi_canonical_to_hf", "mimi_config_from_hf"]

# transformers 5.x nested prefixes -> flat hub prefixes (verified against MimiModel.state_dict()).
_NESTED_TO_FLAT = (
    ("encoder.encoder_seanet.layers.", "encoder.layers."),
    ("encoder.encoder_transformer.", "encoder_transformer."),
    ("encoder.downsample.", "downsample."),
    ("decoder.upsample.", "upsample."),
    ("decoder.decoder_transformer.", "decoder_transformer."),
    ("decoder.decoder_seanet.layers.", "decoder.layers."),
)
# HF transformer-layer suffix -> Kyutai suffix (attention q/k/v handled apart).
_TF_LAYER = {
    "self_attn.o_proj.weight": "self_attn.out_proj.weight",
    "mlp.fc1.weight": "linear1.weight",
    "mlp.fc2.weight": "linear2.weight",
    "input_layernorm.weight": "norm1.weight",
    "input_layernorm.bias": "norm1.bias",
    "post_attention_layernorm.weight": "norm2.weight",
    "post_attention_layernorm.bias": "norm2.bias",
    "self_attn_layer_scale.scale": "layer_scale_1.scale",
    "mlp_layer_scale.scale": "layer_scale_2.scale",
}
_RVQ = {"semantic_residual_vector_quantizer": "rvq_first", "acoustic_residual_vector_quantizer": "rvq_rest"}
_CODEBOOK = {"embed_sum": "embedding_sum", "cluster_usage": "cluster_usage", "initialized": "_initialized"}
_QKV = ("q_proj", "k_proj", "v_proj")

_SEANET_RE = re.compile(r"^(encoder|decoder)\.layers\.(\d+)\.(conv|block\.\d+\.conv)\.(weight|bias)$")
_TF_RE = re.compile(r"^(encoder|decoder)_transformer\.layers\.(\d+)\.(.+)$")
_VQ_RE = re.compile(r"^quantizer\.(\w+_residual_vector_quantizer)\.layers\.(\d+)\.codebook\.(\w+)$")
_VQ_PROJ_RE = re.compile(r"^quantizer\.(\w+_residual_vector_quantizer)\.(input_proj|output_proj)\.weight$")
_MOSHI_ATTN = (("self_attn.in_projs.0.weight", "self_attn.in_proj_weight"), ("self_attn.out_projs.0.weight", "self_attn.out_proj.weight"))


def detect_mimi_layout(names: Iterable[str], source: str = "checkpoint") -> str:
    """'kyutai', 'hf' (flat hub names) or 'hf-nested' (transformers 5.x module names)."""
    names = set(names)
    if any(n.startswith(("encoder.model.", "quantizer.rvq_first.")) for n in names):
        return "kyutai"
    if any(n.startswith(("encoder.encoder_seanet.", "decoder.decoder_seanet.")) for n in names):
        return "hf-nested"
    if any(n.startswith(("encoder.layers.", "quantizer.semantic_residual_vector_quantizer.")) for n in names):
        return "hf"
    raise CheckpointError(
        f"{source}: not a Mimi checkpoint (no 'encoder.model.*' of Kyutai nor 'encoder.layers.*' of Hugging Face); "
        f"first names: {sorted(names)[:6]}"
    )


def _kyutai_normalise(weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for name, w in weights.items():
        for old, new in _MOSHI_ATTN:
            if name.endswith(old):
                name = name[: -len(old)] + new
        out[name] = w
    return out


def mimi_hf_to_canonical(
    weights: Mapping[str, np.ndarray], cfg: MimiConfig, source: str = "checkpoint"
) -> dict[str, np.ndarray]:
    """HF (flat or nested) or Kyutai Mimi tensors -> Kyutai names.

    Names that map to nothing are kept as they are, so `validate_weights` reports them.
    """
    layout = detect_mimi_layout(weights, source)
    if layout == "kyutai":
        return _kyutai_normalise(weights)
    if layout == "hf-nested":
        flat = {}
        for name, w in weights.items():
            for old, new in _NESTED_TO_FLAT:
                if name.startswith(old):
                    name = new + name[len(old) :]
                    break
            flat[name] = w
        weights = flat

    heads, head_dim = cfg.num_heads, cfg.dimension // cfg.num_heads
    convtr = set(mimi_convtr_indices(cfg))
    out: dict[str, np.ndarray] = {}
    qkv: dict[str, dict[str, np.ndarray]] = {}  # Kyutai layer prefix -> {q_proj, k_proj, v_proj}
    for name, w in weights.items():
        if m := _SEANET_RE.match(name):
            part, i, mod, kind = m.groups()
            if mod == "conv" and part == "decoder" and int(i) in convtr:
                out[f"decoder.model.{i}.convtr.convtr.{kind}"] = w
            else:
                out[f"{part}.model.{i}.{mod}.conv.{kind}"] = w
        elif m := _TF_RE.match(name):
            part, n, rest = m.groups()
            prefix = f"{part}_transformer.transformer.layers.{n}"
            proj = rest[len("self_attn.") : -len(".weight")] if rest.startswith("self_attn.") else ""
            if proj in _QKV and rest.endswith(".weight"):
                qkv.setdefault(prefix, {})[proj] = w
            elif rest in _TF_LAYER:
                out[f"{prefix}.{_TF_LAYER[rest]}"] = w
            else:
                out[name] = w
        elif (m := _VQ_RE.match(name)) and m.group(1) in _RVQ and m.group(3) in _CODEBOOK:
            out[f"quantizer.{_RVQ[m.group(1)]}.vq.layers.{m.group(2)}._codebook.{_CODEBOOK[m.group(3)]}"] = w
        elif (m := _VQ_PROJ_RE.match(name)) and m.group(1) in _RVQ:
            out[f"quantizer.{_RVQ[m.group(1)]}.{m.group(2)}.weight"] = w
        elif name == "downsample.conv.weight":
            out["downsample.conv.conv.conv.weight"] = w
        elif name == "upsample.conv.weight":
            out["upsample.convtr.convtr.convtr.weight"] = w
        else:
            out[name] = w

    for prefix, parts in qkv.items():
        missing = [p for p in _QKV if p not in parts]
        if missing:
            raise CheckpointError(f"{source}: attention of {prefix} lacks {missing} (need q_proj, k_proj and v_proj)")
        q = half_to_interleaved(parts["q_proj"], heads, head_dim, f"{source}: {prefix} q_proj")
        k = half_to_interleaved(parts["k_proj"], heads, head_dim, f"{source}: {prefix} k_proj")
        v = parts["v_proj"]
        if not (q.shape == k.shape == v.shape):
            raise CheckpointError(f"{source}: {prefix} q/k/v_proj shapes differ: {q.shape}, {k.shape}, {v.shape}")
        out[f"{prefix}.self_attn.in_proj_weight"] = np.concatenate([q, k, v], axis=0)  # 3 x [d, d] -> [3d, d]
    return out


def mimi_canonical_to_hf(weights: Mapping[str, np.ndarray], cfg: MimiConfig, *, nested: bool = False) -> dict[str, np.ndarray]:
    """Kyutai Mimi tensors -> HF flat hub names (or transformers 5.x nested names with nested=True)."""
    heads, head_dim, d = cfg.num_heads, cfg.dimension // cfg.num_heads, cfg.dimension
    inv_tf = {v: k for k, v in _TF_LAYER.items()}
    inv_rvq = {v: k for k, v in _RVQ.items()}
    inv_cb = {v: k for k, v in _CODEBOOK.items()}
    seanet = re.compile(r"^(encoder|decoder)\.model\.(\d+)\.(conv\.conv|convtr\.convtr|block\.\d+\.conv\.conv)\.(weight|bias)$")
    tf = re.compile(r"^(encoder|decoder)_transformer\.transformer\.layers\.(\d+)\.(.+)$")
    vq = re.compile(r"^quantizer\.(rvq_first|rvq_rest)\.vq\.layers\.(\d+)\._codebook\.(\w+)$")
    vq_proj = re.compile(r"^quantizer\.(rvq_first|rvq_rest)\.(input_proj|output_proj)\.weight$")
    out: dict[str, np.ndarray] = {}
    for name, w in _kyutai_normalise(weights).items():
        if m := seanet.match(name):
            part, i, mod, kind = m.groups()
            mod = "conv" if mod in ("conv.conv", "convtr.convtr") else mod[: -len(".conv")]
            out[f"{part}.layers.{i}.{mod}.{kind}"] = w
        elif m := tf.match(name):
            part, n, rest = m.groups()
            prefix = f"{part}_transformer.layers.{n}"
            if rest == "self_attn.in_proj_weight":
                q, k, v = w[:d], w[d : 2 * d], w[2 * d :]  # [3d, d] -> 3 x [d, d]
                out[f"{prefix}.self_attn.q_proj.weight"] = interleaved_to_half(q, heads, head_dim, name)
                out[f"{prefix}.self_attn.k_proj.weight"] = interleaved_to_half(k, heads, head_dim, name)
                out[f"{prefix}.self_attn.v_proj.weight"] = v
            elif rest in inv_tf:
                out[f"{prefix}.{inv_tf[rest]}"] = w
            else:
                raise CheckpointError(f"Mimi tensor {name!r} has no Hugging Face name")
        elif m := vq.match(name):
            out[f"quantizer.{inv_rvq[m.group(1)]}.layers.{m.group(2)}.codebook.{inv_cb[m.group(3)]}"] = w
        elif m := vq_proj.match(name):
            out[f"quantizer.{inv_rvq[m.group(1)]}.{m.group(2)}.weight"] = w
        elif name == "downsample.conv.conv.conv.weight":
            out["downsample.conv.weight"] = w
        elif name == "upsample.convtr.convtr.convtr.weight":
            out["upsample.conv.weight"] = w
        else:
            raise CheckpointError(f"Mimi tensor {name!r} has no Hugging Face name")
    if nested:
        renamed = {}
        for name, w in out.items():
            for new, old in _NESTED_TO_FLAT:
                if name.startswith(old):
                    name = new + name[len(old) :]
                    break
            renamed[name] = w
        out = renamed
    return out


def mimi_config_from_hf(data: Mapping, source: str = "config") -> MimiConfig:
    """A MimiConfig from a Hugging Face `MimiConfig` dict (kyutai/mimi config.json or a CSM `codec_config`)."""
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{source}: a Mimi config must be a JSON object, got {type(data).__name__}")
    try:
        return _mimi_config_from_hf(data, source)
    except ConfigError as e:
        raise CheckpointError(f"{source}: {e}") from None
    except (TypeError, ValueError, OverflowError, ZeroDivisionError, AttributeError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{source}: bad Mimi config value ({type(e).__name__}: {str(e)[:200]})") from None


def _mimi_config_from_hf(data: Mapping, source: str) -> MimiConfig:
    rope = data.get("rope_parameters") or {}
    if not isinstance(rope, Mapping):
        raise CheckpointError(f"{source}: rope_parameters must be an object, got {type(rope).__name__}")
    try:
        hidden, heads = int(data.get("hidden_size", 512)), int(data.get("num_attention_heads", 8))
        if hidden < 1 or heads < 1:
            raise ValueError(f"hidden_size {hidden} and num_attention_heads {heads} must be >= 1")
        head_dim = data.get("head_dim") or hidden // heads
        kv = int(data.get("num_key_value_heads", heads))
        codebook_dim = data.get("codebook_dim", 256)  # HF: default 256, explicit None means hidden_size
        codebook_dim = hidden if codebook_dim is None else int(codebook_dim)
        vq_dim = int(data.get("vector_quantization_hidden_dimension", codebook_dim))
        groups = int(data.get("upsample_groups", hidden))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: bad Mimi config value ({e})") from None
    problems = []
    if int(head_dim) * heads != hidden:
        problems.append(f"head_dim {head_dim} x {heads} heads != hidden_size {hidden}")
    if kv != heads:
        problems.append(f"num_key_value_heads {kv} != num_attention_heads {heads} (Mimi has no GQA)")
    if vq_dim != codebook_dim:
        problems.append(f"vector_quantization_hidden_dimension {vq_dim} != codebook_dim {codebook_dim}")
    if groups != hidden:
        problems.append(f"upsample_groups {groups} != hidden_size {hidden} (the upsample is depthwise)")
    if problems:
        raise CheckpointError(f"{source}: unsupported Mimi config: {'; '.join(problems)}")
    kw = dict(
        sample_rate=int(data.get("sampling_rate", 24_000)),
        channels=int(data.get("audio_channels", 1)),
        dimension=hidden,
        n_filters=int(data.get("num_filters", 64)),
        ratios=tuple(int(r) for r in (data.get("upsampling_ratios") or (8, 6, 5, 4))),
        kernel_size=int(data.get("kernel_size", 7)),
        last_kernel_size=int(data.get("last_kernel_size", 3)),
        residual_kernel_size=int(data.get("residual_kernel_size", 3)),
        compress=int(data.get("compress", 2)),
        num_transformer_layers=int(data.get("num_hidden_layers", 8)),
        num_heads=heads,
        dim_feedforward=int(data.get("intermediate_size", 2048)),
        context=int(data.get("sliding_window", 250)),
        rope_max_period=float(rope.get("rope_theta", data.get("rope_theta", 10_000.0))),
        norm_eps=float(data.get("norm_eps", 1e-5)),
        num_codebooks=int(data.get("num_quantizers", 32)),
        num_semantic=int(data.get("num_semantic_quantizers", 1)),
        codebook_size=int(data.get("codebook_size", 2048)),
        codebook_dim=codebook_dim,
    )
    if data.get("frame_rate") is not None:
        kw["frame_rate"] = float(data["frame_rate"])
    return MimiConfig(**kw)
