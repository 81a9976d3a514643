"""Loading real transformers / moshi / torch.save outputs (tiny random models) into canonical weights.

- HF `CsmForConditionalGeneration.save_pretrained` -> canonical == the original-layout export of the
  same weights (q/k rows un-permuted by an explicit per-row formula), and attention scores with
  interleaved RoPE on our weights == HF's rotate_half RoPE on its own weights.
- HF `MimiModel.save_pretrained` (and the nested 5.x state dict, and `codec_model.*`) -> Kyutai
  names that moshi's MimiModel loads strictly and that encode/decode exactly as HF does.
- `torch.save` of the original layout (`ckpt.pt`) -> the same canonical weights.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from csm_core.config import MimiConfig, mimi_tiny
from csm_core.weights import (
    load_csm_checkpoint,
    load_mimi_checkpoint,
    mimi_hf_to_canonical,
    save_safetensors,
    split_codec,
)
from weights_helpers import BB_ROPE, DD_ROPE, small_csm

pytestmark = pytest.mark.reference
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# Same dims as the tiny-backbone / tiny-decoder flavors, so the HF config maps to named flavors.
CSM = small_csm()


def hf_mimi_config(m: MimiConfig):
    return transformers.MimiConfig(
        hidden_size=m.dimension, num_filters=m.n_filters, num_hidden_layers=m.num_transformer_layers,
        num_attention_heads=m.num_heads, num_key_value_heads=m.num_heads, head_dim=m.dimension // m.num_heads,
        intermediate_size=m.dim_feedforward, codebook_dim=m.codebook_dim, vector_quantization_hidden_dimension=m.codebook_dim,
        upsample_groups=m.dimension, num_quantizers=m.num_codebooks,
    )  # fmt: skip


def randomise_mimi(model, seed: int) -> None:
    """spec/mimi.md §9: random codebooks and usage, layer scales U(0, 0.2), initialized = 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict(keep_vars=True).items():
            if name.endswith("cluster_usage"):
                t.copy_(0.5 + 1.5 * torch.rand(t.shape, generator=g))
            elif name.endswith("initialized"):
                t.fill_(1.0)
            elif name.endswith("layer_scale.scale"):
                t.copy_(0.2 * torch.rand(t.shape, generator=g))
        for name, t in model.state_dict(keep_vars=True).items():
            if name.endswith("embed_sum"):
                usage = model.state_dict()[name[: -len("embed_sum")] + "cluster_usage"]
                t.copy_(0.05 * torch.randn(t.shape, generator=g) * usage[:, None])


@pytest.fixture(scope="module")
def hf_csm(tmp_path_factory):
    b, d = CSM.backbone, CSM.decoder
    cfg = transformers.CsmConfig(
        hidden_size=b.embed_dim, intermediate_size=b.intermediate_dim, num_hidden_layers=b.num_layers,
        num_attention_heads=b.num_heads, num_key_value_heads=b.num_kv_heads, text_vocab_size=CSM.text_vocab_size,
        rope_parameters=BB_ROPE,
        depth_decoder_config=dict(hidden_size=d.embed_dim, intermediate_size=d.intermediate_dim, num_hidden_layers=d.num_layers,
                                  num_attention_heads=d.num_heads, num_key_value_heads=d.num_kv_heads,
                                  backbone_hidden_size=b.embed_dim, rope_parameters=DD_ROPE),
        codec_config=hf_mimi_config(mimi_tiny()).to_dict(),
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.CsmForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # norm scales away from 1 so a swapped norm would show
        for n, p in model.named_parameters():
            if "norm" in n:
                p.add_(0.1 * torch.randn_like(p))
    randomise_mimi(model.codec_model, seed=1)
    out = tmp_path_factory.mktemp("hf_csm")
    model.save_pretrained(out)
    return model, out


def _interleave_rows(hf: np.ndarray, heads: int, d: int) -> np.ndarray:
    """Explicit inverse of spec/csm.md §4: canonical row h*d + 2i+p = HF row h*d + p*d/2 + i."""
    out = np.empty_like(hf)
    for h in range(heads):
        for i in range(d // 2):
            for p in range(2):
                out[h * d + 2 * i + p] = hf[h * d + p * (d // 2) + i]
    return out


def original_export(model) -> dict[str, np.ndarray]:
    """The original-Sesame-layout export of an HF model, written out name by name."""
    sd = {k: v.detach().numpy().copy() for k, v in model.state_dict().items() if not k.startswith("codec_model.")}
    out = {
        "text_embeddings.weight": sd["embed_text_tokens.weight"],
        "audio_embeddings.weight": sd["backbone_model.embed_tokens.embed_audio_tokens.weight"],
        "codebook0_head.weight": sd["lm_head.weight"],
        "projection.weight": sd["depth_decoder.model.inputs_embeds_projector.weight"],
        "audio_head": sd["depth_decoder.codebooks_head.weight"],
        "backbone.norm.scale": sd["backbone_model.norm.weight"],
        "decoder.norm.scale": sd["depth_decoder.model.norm.weight"],
    }
    for stack, hf_stack, cfg in (("backbone", "backbone_model", CSM.backbone), ("decoder", "depth_decoder.model", CSM.decoder)):
        for i in range(cfg.num_layers):
            src, dst = f"{hf_stack}.layers.{i}.", f"{stack}.layers.{i}."
            out[dst + "attn.q_proj.weight"] = _interleave_rows(sd[src + "self_attn.q_proj.weight"], cfg.num_heads, cfg.head_dim)
            out[dst + "attn.k_proj.weight"] = _interleave_rows(sd[src + "self_attn.k_proj.weight"], cfg.num_kv_heads, cfg.head_dim)
            out[dst + "attn.v_proj.weight"] = sd[src + "self_attn.v_proj.weight"]
            out[dst + "attn.output_proj.weight"] = sd[src + "self_attn.o_proj.weight"]
            out[dst + "mlp.w1.weight"] = sd[src + "mlp.gate_proj.weight"]
            out[dst + "mlp.w2.weight"] = sd[src + "mlp.down_proj.weight"]
            out[dst + "mlp.w3.weight"] = sd[src + "mlp.up_proj.weight"]
            out[dst + "sa_norm.scale"] = sd[src + "input_layernorm.weight"]
            out[dst + "mlp_norm.scale"] = sd[src + "post_attention_layernorm.weight"]
    return out


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)


def test_hf_save_pretrained_equals_original_export(hf_csm, tmp_path):
    model, hf_dir = hf_csm
    from safetensors import safe_open

    with safe_open(hf_dir / "model.safetensors", "np") as f:  # save_pretrained writes one tied copy
        saved = set(f.keys())
    assert "depth_decoder.model.embed_tokens.weight" in saved
    assert "backbone_model.embed_tokens.embed_audio_tokens.weight" not in saved

    cfg, from_hf = load_csm_checkpoint(hf_dir)
    assert cfg.backbone == CSM.backbone and cfg.decoder == CSM.decoder

    export = original_export(model)
    save_safetensors(tmp_path / "model.safetensors", export)
    (tmp_path / "config.json").write_text(json.dumps(CSM.to_dict()))
    cfg2, from_original = load_csm_checkpoint(tmp_path)
    assert cfg2 == CSM
    assert _same(from_hf, from_original)

    # ckpt.pt of the same original layout, read without torch.
    pt_dir = tmp_path / "pt"
    pt_dir.mkdir()
    torch.save({k: torch.from_numpy(v) for k, v in export.items()}, pt_dir / "ckpt.pt")
    assert _same(load_csm_checkpoint(pt_dir, CSM)[1], from_original)


def _interleaved_rope(x: np.ndarray, inv_freq: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """spec/csm.md §1: out[2i] = x[2i]c - x[2i+1]s, out[2i+1] = x[2i+1]c + x[2i]s. x: [S, H, d]."""
    ang = pos[:, None] * inv_freq[None, :]  # [S, d/2]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    a, b = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = a * c - b * s, b * c + a * s
    return out


@pytest.mark.parametrize("stack", ["backbone", "decoder"])
def test_attention_scores_match_hf_rope(hf_csm, stack):
    """q.k after RoPE: canonical interleaved weights + interleaved RoPE == HF weights + rotate_half."""
    from transformers.models.csm.modeling_csm import apply_rotary_pos_emb

    model, hf_dir = hf_csm
    _, can = load_csm_checkpoint(hf_dir)
    lcfg = CSM.backbone if stack == "backbone" else CSM.decoder
    hf_layer = (model.backbone_model if stack == "backbone" else model.depth_decoder.model).layers[1].self_attn
    rotary = (model.backbone_model if stack == "backbone" else model.depth_decoder.model).rotary_emb
    S, H, KV, d = 7, lcfg.num_heads, lcfg.num_kv_heads, lcfg.head_dim
    x = torch.randn(1, S, lcfg.embed_dim, generator=torch.Generator().manual_seed(3))
    pos = torch.arange(S)[None] + 5
    with torch.no_grad():
        cos, sin = rotary(x, pos)
        q = hf_layer.q_proj(x).view(1, S, H, d).transpose(1, 2)
        k = hf_layer.k_proj(x).view(1, S, KV, d).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        hf_scores = torch.einsum("hqd,hkd->hqk", q[0], k[0].repeat_interleave(H // KV, dim=0)).numpy()

    xn = x[0].numpy().astype(np.float64)
    p = f"{stack}.layers.1.attn."
    qc = (xn @ can[p + "q_proj.weight"].T).reshape(S, H, d)
    kc = (xn @ can[p + "k_proj.weight"].T).reshape(S, KV, d)
    inv = lcfg.inv_freq().astype(np.float64)
    np.testing.assert_allclose(inv, rotary.inv_freq.numpy(), rtol=1e-6)
    posn = pos[0].numpy().astype(np.float64)
    qc, kc = _interleaved_rope(qc, inv, posn), _interleaved_rope(kc, inv, posn)
    scores = np.einsum("qhd,khd->hqk", qc, np.repeat(kc, H // KV, axis=1))
    np.testing.assert_allclose(scores, hf_scores, atol=1e-5, rtol=1e-4)


# ---- Mimi ----


def moshi_mimi(m: MimiConfig):
    """moshi's MimiModel with the dims of `m` (loaders.get_mimi's kwargs, resized)."""
    loaders = pytest.importorskip("moshi.models.loaders")
    seanet = dict(loaders._seanet_kwargs, dimension=m.dimension, n_filters=m.n_filters, ratios=list(m.ratios))
    quant = dict(loaders._quantizer_kwargs, dimension=m.codebook_dim, n_q=m.num_codebooks, bins=m.codebook_size,
                 input_dimension=m.dimension, output_dimension=m.dimension)  # fmt: skip
    tf = dict(loaders._transformer_kwargs, d_model=m.dimension, num_heads=m.num_heads, num_layers=m.num_transformer_layers,
              dim_feedforward=m.dim_feedforward, input_dimension=m.dimension, output_dimensions=[m.dimension])  # fmt: skip
    cfg = dict(loaders._mimi_config, seanet=seanet, quantizer=quant, transformer=tf)
    return loaders.get_mimi(None, cfg, num_codebooks=m.num_codebooks).eval()


@pytest.fixture(scope="module")
def hf_mimi(tmp_path_factory):
    torch.manual_seed(2)
    model = transformers.MimiModel(hf_mimi_config(mimi_tiny())).eval()
    randomise_mimi(model, seed=4)
    out = tmp_path_factory.mktemp("hf_mimi")
    model.save_pretrained(out)
    return model, out


def test_hf_mimi_loads_into_moshi_and_codes_agree(hf_mimi):
    model, hf_dir = hf_mimi
    weights = load_mimi_checkpoint(hf_dir)  # MimiConfig from config.json
    assert len(weights) == len(model.state_dict()) - 2 * 2 * mimi_tiny().num_transformer_layers
    moshi = moshi_mimi(mimi_tiny())
    moshi.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()}, strict=True)

    audio = 0.3 * torch.randn(1, 1, 24000 + 960, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        hf_codes = model.encode(audio, num_quantizers=32).audio_codes
        moshi_codes = moshi.encode(audio)
        assert hf_codes.shape == moshi_codes.shape == (1, 32, 13)
        assert (hf_codes == moshi_codes).float().mean() >= 0.99  # near-ties may flip (spec/mimi.md §9)
        assert torch.equal(hf_codes[:, 0], moshi_codes[:, 0])
        hf_audio = model.decode(hf_codes).audio_values
        moshi_audio = moshi.decode(hf_codes)
    np.testing.assert_allclose(moshi_audio.numpy(), hf_audio.numpy(), atol=1e-5, rtol=1e-4)


def test_hf_mimi_nested_state_dict_and_csm_codec(hf_mimi, hf_csm):
    model, hf_dir = hf_mimi
    from_file = load_mimi_checkpoint(hf_dir)
    nested = {k: v.detach().numpy() for k, v in model.state_dict().items()}  # transformers 5.x module names
    assert any(k.startswith("encoder.encoder_seanet.") for k in nested)
    assert _same(mimi_hf_to_canonical(nested, mimi_tiny()), from_file)

    csm_model, csm_dir = hf_csm
    codec = load_mimi_checkpoint(csm_dir)  # codec_model.* of the CSM checkpoint, config from codec_config
    in_memory = {k: v.detach().numpy() for k, v in csm_model.state_dict().items()}
    _, nested_codec = split_codec(in_memory)
    assert _same(mimi_hf_to_canonical(nested_codec, mimi_tiny()), codec)


# ---- full-size names and shapes (meta device: no weight memory) ----


def _placeholders(state_dict) -> dict[str, np.ndarray]:
    return {k: np.broadcast_to(np.float32(0), tuple(v.shape)) for k, v in state_dict.items()}


@pytest.mark.slow  # building the full HF model, even on the meta device, takes ~20 s here
def test_full_size_hf_names_and_shapes():
    """HF CsmForConditionalGeneration / MimiModel at full size map onto csm_1b() and mimi() exactly."""
    from csm_core.config import csm_1b, mimi
    from csm_core.weights import csm_canonical_to_hf, csm_hf_to_canonical, mimi_canonical_to_hf, mimi_weight_shapes, validate_weights

    hf_cfg = transformers.CsmConfig(rope_parameters=BB_ROPE, depth_decoder_config={"rope_parameters": DD_ROPE})
    with torch.device("meta"):
        model = transformers.CsmForConditionalGeneration(hf_cfg)
    sd = _placeholders(model.state_dict())
    assert len(sd) == 538  # the hub shards' tensor count: 187 + the second tied copy + 350 Mimi
    csm, codec = split_codec(sd)
    can = csm_hf_to_canonical(csm, csm_1b())
    validate_weights(csm_1b().weight_shapes(), can, "HF CsmForConditionalGeneration", check_finite=False)
    assert set(csm_canonical_to_hf(can, csm_1b())) == set(csm)
    mimi_can = mimi_hf_to_canonical(codec, mimi())
    validate_weights(mimi_weight_shapes(mimi()), mimi_can, "HF codec_model", check_finite=False)
    flat = set(mimi_canonical_to_hf(mimi_can, mimi()))
    assert len(flat) == 350 and set(mimi_canonical_to_hf(mimi_can, mimi(), nested=True)) == set(codec)
