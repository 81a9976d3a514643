"""Layout mapping (original Sesame <-> Hugging Face CSM, Kyutai <-> HF Mimi), parameter counts and
strict validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from csm_core.config import csm_1b, csm_tiny, mimi, mimi_tiny
from csm_core.weights import (
    CheckpointError,
    csm_canonical_to_hf,
    csm_hf_to_canonical,
    detect_csm_layout,
    detect_mimi_layout,
    half_to_interleaved,
    interleaved_to_half,
    is_codebook_buffer,
    mimi_canonical_to_hf,
    mimi_hf_to_canonical,
    mimi_num_codebook_values,
    mimi_num_parameters,
    mimi_weight_shapes,
    split_codec,
    validate_weights,
)
from weights_helpers import random_weights, small_csm


def reference_half_split(w: np.ndarray, heads: int, d: int) -> np.ndarray:
    """spec/csm.md §4 written out: old row 2i+p of each head -> new row p*d/2 + i."""
    out = np.empty_like(w)
    for h in range(heads):
        for i in range(d // 2):
            for p in range(2):
                out[h * d + p * (d // 2) + i] = w[h * d + 2 * i + p]
    return out


# ---- counts ----


def test_parameter_counts():
    assert csm_1b().num_parameters() == 1_552_791_552
    assert len(csm_1b().weight_shapes()) == 187
    shapes = mimi_weight_shapes(mimi())
    assert len(shapes) == 318
    assert mimi_num_parameters(mimi()) == 79_308_609
    assert mimi_num_codebook_values(mimi()) == 16_842_784
    assert sum(is_codebook_buffer(k) for k in shapes) == 3 * 32
    assert shapes["decoder.model.2.convtr.convtr.weight"] == (1024, 512, 16)
    assert shapes["upsample.convtr.convtr.convtr.weight"] == (512, 1, 4)
    assert shapes["encoder_transformer.transformer.layers.7.self_attn.in_proj_weight"] == (1536, 512)
    assert shapes["quantizer.rvq_rest.vq.layers.30._codebook.embedding_sum"] == (2048, 256)
    assert "quantizer.rvq_rest.vq.layers.31._codebook.embedding_sum" not in shapes


# ---- RoPE permutation ----


@pytest.mark.parametrize("heads, d", [(1, 2), (4, 8), (8, 64), (2, 128)])
def test_rope_permutation_matches_formula(heads, d):
    w = np.random.default_rng(0).standard_normal((heads * d, 5)).astype(np.float32)
    half = interleaved_to_half(w, heads, d)
    assert np.array_equal(half, reference_half_split(w, heads, d))
    assert np.array_equal(half_to_interleaved(half, heads, d), w)


def test_rope_permutation_is_attention_preserving():
    """Interleaved RoPE on canonical rows == rotate_half RoPE on permuted rows, per head."""
    heads, d, pos = 2, 8, 5
    rng = np.random.default_rng(0)
    wq, x = rng.standard_normal((heads * d, 6)), rng.standard_normal(6)
    freq = 1.0 / 10000 ** (np.arange(0, d, 2) / d)
    c, s = np.cos(pos * freq), np.sin(pos * freq)
    q = (wq @ x).reshape(heads, d // 2, 2)
    inter = np.stack([q[..., 0] * c - q[..., 1] * s, q[..., 1] * c + q[..., 0] * s], -1).reshape(heads, d)
    qh = (interleaved_to_half(wq, heads, d) @ x).reshape(heads, d)
    cc, ss = np.concatenate([c, c]), np.concatenate([s, s])
    rot = np.concatenate([-qh[:, d // 2 :], qh[:, : d // 2]], -1)
    half = qh * cc + rot * ss
    np.testing.assert_allclose(half, reference_half_split(inter.reshape(-1, 1), heads, d).reshape(heads, d), atol=1e-12)


def test_rope_permutation_rejects_bad_shapes():
    with pytest.raises(CheckpointError, match="4 heads x 8 dims"):
        interleaved_to_half(np.zeros((30, 4)), 4, 8)


# ---- CSM ----


def test_csm_round_trip_and_hf_names():
    cfg = small_csm()
    can = random_weights(cfg.weight_shapes())
    hf = csm_canonical_to_hf(can, cfg)
    assert len(hf) == len(can) + 1  # both tied audio-embedding copies
    assert detect_csm_layout(hf) == "hf" and detect_csm_layout(can) == "original"
    b, dd = cfg.backbone, cfg.decoder
    assert np.array_equal(
        hf["backbone_model.layers.1.self_attn.q_proj.weight"],
        reference_half_split(can["backbone.layers.1.attn.q_proj.weight"], b.num_heads, b.head_dim),
    )
    assert np.array_equal(
        hf["depth_decoder.model.layers.0.self_attn.k_proj.weight"],
        reference_half_split(can["decoder.layers.0.attn.k_proj.weight"], dd.num_kv_heads, dd.head_dim),
    )
    assert hf["depth_decoder.model.layers.0.self_attn.v_proj.weight"] is can["decoder.layers.0.attn.v_proj.weight"]
    for hf_name, name in [
        ("embed_text_tokens.weight", "text_embeddings.weight"),
        ("lm_head.weight", "codebook0_head.weight"),
        ("depth_decoder.codebooks_head.weight", "audio_head"),
        ("depth_decoder.model.inputs_embeds_projector.weight", "projection.weight"),
        ("backbone_model.embed_tokens.embed_audio_tokens.weight", "audio_embeddings.weight"),
        ("depth_decoder.model.embed_tokens.weight", "audio_embeddings.weight"),
        ("backbone_model.layers.0.mlp.gate_proj.weight", "backbone.layers.0.mlp.w1.weight"),
        ("backbone_model.layers.0.mlp.down_proj.weight", "backbone.layers.0.mlp.w2.weight"),
        ("backbone_model.layers.0.mlp.up_proj.weight", "backbone.layers.0.mlp.w3.weight"),
        ("backbone_model.layers.0.self_attn.o_proj.weight", "backbone.layers.0.attn.output_proj.weight"),
        ("depth_decoder.model.layers.1.input_layernorm.weight", "decoder.layers.1.sa_norm.scale"),
        ("depth_decoder.model.layers.1.post_attention_layernorm.weight", "decoder.layers.1.mlp_norm.scale"),
        ("backbone_model.norm.weight", "backbone.norm.scale"),
        ("depth_decoder.model.norm.weight", "decoder.norm.scale"),
    ]:
        assert hf[hf_name] is can[name], hf_name
    back = csm_hf_to_canonical(hf, cfg)
    assert back.keys() == can.keys() and all(np.array_equal(back[k], can[k]) for k in can)
    validate_weights(cfg.weight_shapes(), back, "round trip")


def test_csm_tied_embedding_copies():
    cfg = small_csm()
    can = random_weights(cfg.weight_shapes())
    one = csm_canonical_to_hf(can, cfg, tied_copies="decoder")
    assert "backbone_model.embed_tokens.embed_audio_tokens.weight" not in one
    assert np.array_equal(csm_hf_to_canonical(one, cfg)["audio_embeddings.weight"], can["audio_embeddings.weight"])
    only_backbone = dict(one)
    only_backbone["backbone_model.embed_tokens.embed_audio_tokens.weight"] = only_backbone.pop("depth_decoder.model.embed_tokens.weight")
    assert np.array_equal(csm_hf_to_canonical(only_backbone, cfg)["audio_embeddings.weight"], can["audio_embeddings.weight"])
    both = csm_canonical_to_hf(can, cfg)
    both["depth_decoder.model.embed_tokens.weight"] = both["depth_decoder.model.embed_tokens.weight"] + 1
    with pytest.raises(CheckpointError, match="tied audio embedding copies differ"):
        csm_hf_to_canonical(both, cfg, "ckpt")


def test_csm_codec_split_and_unknown_names():
    cfg = small_csm()
    hf = csm_canonical_to_hf(random_weights(cfg.weight_shapes()), cfg)
    hf["codec_model.encoder.layers.0.conv.weight"] = np.zeros((4, 1, 7), np.float32)
    hf["backbone_model.layers.0.self_attn.rotary.weight"] = np.zeros(3, np.float32)
    csm, codec = split_codec(hf)
    assert list(codec) == ["encoder.layers.0.conv.weight"]
    can = csm_hf_to_canonical(hf, cfg)
    assert not any(k.startswith("codec_model") for k in can)
    with pytest.raises(CheckpointError, match=r"1 unexpected tensor\(s\):\n    backbone_model.layers.0.self_attn.rotary.weight \(3,\)"):
        validate_weights(cfg.weight_shapes(), can, "ckpt")


def test_detect_csm_layout_errors():
    with pytest.raises(CheckpointError, match="not a CSM checkpoint"):
        detect_csm_layout(["encoder.model.0.conv.conv.weight"])
    with pytest.raises(CheckpointError, match="both"):
        detect_csm_layout(["text_embeddings.weight", "embed_text_tokens.weight"])


# ---- Mimi ----


@pytest.mark.parametrize("cfg", [mimi_tiny(), mimi()], ids=["tiny", "full"])
def test_mimi_round_trip(cfg):
    shapes = mimi_weight_shapes(cfg)
    if cfg == mimi():  # full size: zero-copy placeholders, only names and shapes matter
        can = {k: np.broadcast_to(np.float32(i), s) for i, (k, s) in enumerate(shapes.items())}
    else:
        can = random_weights(shapes)
    hf = mimi_canonical_to_hf(can, cfg)
    assert len(hf) == len(can) + 2 * 2 * cfg.num_transformer_layers  # in_proj -> q, k, v
    if cfg == mimi():
        assert len(hf) == 350
    assert detect_mimi_layout(hf) == "hf"
    nested = mimi_canonical_to_hf(can, cfg, nested=True)
    assert detect_mimi_layout(nested) == "hf-nested"
    for src in (hf, nested):
        back = mimi_hf_to_canonical(src, cfg)
        assert back.keys() == can.keys()
        assert all(np.array_equal(back[k], can[k]) for k in can)
    validate_weights(shapes, mimi_hf_to_canonical(hf, cfg), "mimi", check_finite=False)


def test_mimi_hf_names_and_qk_permutation():
    cfg = mimi_tiny()
    can = random_weights(mimi_weight_shapes(cfg))
    hf = mimi_canonical_to_hf(can, cfg)
    d, heads = cfg.dimension, cfg.num_heads
    packed = can["decoder_transformer.transformer.layers.1.self_attn.in_proj_weight"]
    p = "decoder_transformer.layers.1.self_attn."
    assert np.array_equal(hf[p + "q_proj.weight"], reference_half_split(packed[:d], heads, d // heads))
    assert np.array_equal(hf[p + "k_proj.weight"], reference_half_split(packed[d : 2 * d], heads, d // heads))
    assert np.array_equal(hf[p + "v_proj.weight"], packed[2 * d :])
    for hf_name, name in [
        ("encoder.layers.0.conv.weight", "encoder.model.0.conv.conv.weight"),
        ("encoder.layers.1.block.3.conv.bias", "encoder.model.1.block.3.conv.conv.bias"),
        ("decoder.layers.2.conv.weight", "decoder.model.2.convtr.convtr.weight"),
        ("decoder.layers.14.conv.bias", "decoder.model.14.conv.conv.bias"),
        ("encoder_transformer.layers.0.mlp.fc1.weight", "encoder_transformer.transformer.layers.0.linear1.weight"),
        ("encoder_transformer.layers.0.self_attn.o_proj.weight", "encoder_transformer.transformer.layers.0.self_attn.out_proj.weight"),
        ("encoder_transformer.layers.0.input_layernorm.bias", "encoder_transformer.transformer.layers.0.norm1.bias"),
        ("encoder_transformer.layers.0.mlp_layer_scale.scale", "encoder_transformer.transformer.layers.0.layer_scale_2.scale"),
        ("downsample.conv.weight", "downsample.conv.conv.conv.weight"),
        ("upsample.conv.weight", "upsample.convtr.convtr.convtr.weight"),
        ("quantizer.semantic_residual_vector_quantizer.input_proj.weight", "quantizer.rvq_first.input_proj.weight"),
        (
            "quantizer.acoustic_residual_vector_quantizer.layers.30.codebook.embed_sum",
            "quantizer.rvq_rest.vq.layers.30._codebook.embedding_sum",
        ),
        (
            "quantizer.acoustic_residual_vector_quantizer.layers.0.codebook.initialized",
            "quantizer.rvq_rest.vq.layers.0._codebook._initialized",
        ),
    ]:
        assert hf[hf_name] is can[name], hf_name


def test_mimi_moshi_internal_attention_names():
    cfg = mimi_tiny()
    can = random_weights(mimi_weight_shapes(cfg))
    moshi = {
        k.replace("self_attn.in_proj_weight", "self_attn.in_projs.0.weight").replace("self_attn.out_proj.", "self_attn.out_projs.0."): v
        for k, v in can.items()
    }
    assert detect_mimi_layout(moshi) == "kyutai"
    assert mimi_hf_to_canonical(moshi, cfg).keys() == can.keys()


def test_mimi_missing_qkv_part():
    cfg = mimi_tiny()
    hf = mimi_canonical_to_hf(random_weights(mimi_weight_shapes(cfg)), cfg)
    del hf["encoder_transformer.layers.0.self_attn.v_proj.weight"]
    with pytest.raises(CheckpointError, match=r"encoder_transformer.transformer.layers.0 lacks \['v_proj'\]"):
        mimi_hf_to_canonical(hf, cfg, "f.safetensors")


# ---- validation ----


def test_validate_reports_every_problem_by_name():
    shapes = {"a": (2, 3), "b": (4,), "c": (1,)}
    w = {"a": np.zeros((3, 2), np.float32), "b": np.zeros(4, np.float32), "z": np.zeros(5, np.float32)}
    with pytest.raises(CheckpointError) as err:
        validate_weights(shapes, w, "model.safetensors")
    msg = str(err.value)
    assert msg.startswith("model.safetensors: ")
    assert "1 missing tensor(s):\n    c (1,)" in msg
    assert "1 unexpected tensor(s):\n    z (5,)" in msg
    assert "a: expected (2, 3), found (3, 2)" in msg


def test_validate_reports_nonfinite_and_truncates_long_lists():
    w = {"a": np.ones((3, 3), np.float32), "b": np.ones(4, np.float16), "i": np.arange(3)}
    w["a"][1, 2] = np.nan
    w["b"][0] = np.inf
    shapes = {k: v.shape for k, v in w.items()}
    with pytest.raises(CheckpointError, match=r"2 tensor\(s\) with NaN/inf values:\n    a: 1 values\n    b: 1 values"):
        validate_weights(shapes, w, "x")
    validate_weights(shapes, w, "x", check_finite=False)
    many = {f"t{i}": (1,) for i in range(25)}
    with pytest.raises(CheckpointError, match=r"(?s)25 missing tensor\(s\):.*\.\.\. and 15 more"):
        validate_weights(many, {}, "x")


def test_tiny_preset_shapes_cover_codebooks():
    cfg = csm_tiny()
    assert cfg.weight_shapes()["audio_embeddings.weight"] == (2051 * 32, 64)
    assert math.prod(cfg.weight_shapes()["audio_head"]) == 31 * 32 * 2051
