"""Mimi weight layouts (Kyutai, HF flat and nested, HF CSM codec_model.*, bf16) and bad input."""

from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pytest

from csm_audio import CheckpointError, Mimi
from csm_core.config import mimi_tiny
from csm_core.testing.mimi import mimi_test_audio, random_mimi_weights
from csm_core.weights import mimi_canonical_to_hf, save_safetensors


@pytest.fixture(scope="module")
def cfg():
    return mimi_tiny()


@pytest.fixture(scope="module")
def weights(cfg):
    return random_mimi_weights(cfg, 2)


@pytest.fixture(scope="module")
def model(cfg, weights):
    return Mimi(cfg, weights)


@pytest.fixture(scope="module")
def audio():
    return mimi_test_audio(4000, seed=1)


@pytest.fixture(scope="module")
def expected(model, audio):
    return model.encode(audio), model.encode_latent(audio)


def _same_model(m: Mimi, audio, expected, atol=0.0):
    codes, latent = expected
    np.testing.assert_allclose(m.encode_latent(audio), latent, atol=atol, rtol=0)
    if atol == 0.0:
        np.testing.assert_array_equal(m.encode(audio), codes)


@pytest.mark.parametrize("nested", [False, True])
def test_hf_layouts_load_to_the_same_model(cfg, weights, audio, expected, nested):
    hf = mimi_canonical_to_hf(weights, cfg, nested=nested)
    assert "encoder_transformer.layers.0.self_attn.q_proj.weight" in hf or nested
    _same_model(Mimi(cfg, hf), audio, expected)


def test_files_kyutai_hf_and_csm_checkpoint(tmp_path, cfg, weights, audio, expected):
    save_safetensors(tmp_path / "tokenizer-e351c8d8-checkpoint125.safetensors", weights)
    _same_model(Mimi.from_checkpoint(tmp_path / "tokenizer-e351c8d8-checkpoint125.safetensors", cfg), audio, expected)
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    save_safetensors(hf_dir / "model.safetensors", mimi_canonical_to_hf(weights, cfg))
    _same_model(Mimi.from_checkpoint(hf_dir, cfg), audio, expected)
    csm = {f"codec_model.{k}": v for k, v in mimi_canonical_to_hf(weights, cfg).items()}
    csm["backbone.layers.0.attn.q_proj.weight"] = np.zeros((4, 4), np.float32)  # not the codec: ignored
    save_safetensors(tmp_path / "csm.safetensors", csm)
    _same_model(Mimi.from_checkpoint(tmp_path / "csm.safetensors", cfg), audio, expected)


def test_config_json_beside_hf_weights_sets_the_config(tmp_path, cfg, weights, audio, expected):
    hf_cfg = {"model_type": "mimi", "hidden_size": cfg.dimension, "num_filters": cfg.n_filters,
              "num_hidden_layers": cfg.num_transformer_layers, "num_attention_heads": cfg.num_heads,
              "num_key_value_heads": cfg.num_heads, "intermediate_size": cfg.dim_feedforward,
              "codebook_dim": cfg.codebook_dim, "vector_quantization_hidden_dimension": cfg.codebook_dim,
              "upsample_groups": cfg.dimension}
    (tmp_path / "config.json").write_text(json.dumps(hf_cfg))
    save_safetensors(tmp_path / "model.safetensors", mimi_canonical_to_hf(weights, cfg))
    m = Mimi.from_checkpoint(tmp_path)
    assert m.config == cfg
    _same_model(m, audio, expected)


def test_bf16_weights_are_widened(cfg, weights, audio, expected):
    bf16 = {k: v.astype(ml_dtypes.bfloat16) for k, v in weights.items()}
    m = Mimi(cfg, bf16)
    assert m.encoder.first.w_flat.dtype == np.float32
    # bf16 keeps 8 bits of mantissa: same model up to rounding of the weights
    ref = Mimi(cfg, {k: v.astype(np.float32) for k, v in bf16.items()})
    np.testing.assert_array_equal(m.encode_latent(audio), ref.encode_latent(audio))


def test_missing_and_misshaped_tensors_are_named(cfg, weights):
    w = dict(weights)
    del w["decoder.model.0.conv.conv.weight"]
    with pytest.raises(CheckpointError, match=r"decoder\.model\.0\.conv\.conv\.weight"):
        Mimi(cfg, w)
    w = dict(weights)
    w["downsample.conv.conv.conv.weight"] = np.zeros((3, 3, 3), np.float32)
    with pytest.raises(CheckpointError, match=r"downsample\.conv\.conv\.conv\.weight"):
        Mimi(cfg, w)
    w = dict(weights)
    w["quantizer.rvq_rest.output_proj.weight"] = np.full_like(w["quantizer.rvq_rest.output_proj.weight"], np.nan)
    with pytest.raises(CheckpointError, match=r"rvq_rest\.output_proj"):
        Mimi(cfg, w)


def test_bad_checkpoint_files(tmp_path, cfg):
    with pytest.raises(CheckpointError, match="no such file"):
        Mimi.from_checkpoint(tmp_path / "absent.safetensors", cfg)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        Mimi.from_checkpoint(bad, cfg)


def test_bad_audio_is_named(model):
    with pytest.raises(ValueError, match="empty"):
        model.encode(np.zeros(0, np.float32))
    a = np.zeros(2000, np.float32)
    a[17] = np.nan
    with pytest.raises(ValueError, match="NaN/inf.*index 17"):
        model.encode(a)
    a[17] = np.inf
    with pytest.raises(ValueError, match="NaN/inf"):
        model.encode(a)
    with pytest.raises(ValueError, match="1-D"):
        model.encode(np.zeros((2, 2000), np.float32))
    with pytest.raises(ValueError, match="integer PCM"):
        model.encode(np.zeros(2000, np.int16))
    with pytest.raises(ValueError, match="num_codebooks"):
        model.encode(np.zeros(2000, np.float32), num_codebooks=33)
    with pytest.raises(ValueError, match="num_codebooks"):
        model.encode(np.zeros(2000, np.float32), num_codebooks=0)


def test_audio_shapes_accepted(model, audio):
    codes = model.encode(audio)
    np.testing.assert_array_equal(model.encode(audio[None, :]), codes)  # [1, L]
    np.testing.assert_array_equal(model.encode(audio[:, None].astype(np.float64)), codes)  # [L, 1] float64
    assert model.encode(np.zeros(1, np.float32)).shape == (32, 1)  # one sample is one frame


def test_bad_codes_are_named(model):
    good = np.zeros((32, 3), np.int64)
    with pytest.raises(ValueError, match="2-D"):
        model.decode(good[0])
    with pytest.raises(ValueError, match="33 codebooks"):
        model.decode(np.zeros((33, 3), np.int64))
    with pytest.raises(ValueError, match="integers"):
        model.decode(good.astype(np.float32))
    bad = good.copy()
    bad[5, 2] = 2048
    with pytest.raises(ValueError, match=r"code 2048 at codebook 5, frame 2 is out of range \[0, 2048\)"):
        model.decode(bad)
    bad[5, 2] = -1
    with pytest.raises(ValueError, match="out of range"):
        model.streaming_decoder().decode(bad)
    assert model.decode(good[:, :0]).shape == (0,)
