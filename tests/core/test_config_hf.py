"""CSMConfig.from_dict on original and Hugging Face config.json forms, checked against transformers' CsmConfig."""

from __future__ import annotations

import json

import numpy as np
import pytest

from csm_core.config import FLAVORS, CSMConfig, ConfigError, csm_1b, llama3_inv_freq, mimi
from csm_core.weights import CheckpointError, mimi_config_from_hf
from weights_helpers import BB_ROPE, DD_ROPE

ORIGINAL = {"backbone_flavor": "llama-1B", "decoder_flavor": "llama-100M", "text_vocab_size": 128256,
            "audio_vocab_size": 2051, "audio_num_codebooks": 32}  # fmt: skip


def _older_form(rope: dict) -> dict:
    """transformers 4.x: `rope_scaling` without the theta, `rope_theta` beside it (the hub config.json)."""
    return {"rope_scaling": {k: v for k, v in rope.items() if k != "rope_theta"}, "rope_theta": rope["rope_theta"]}


def hub_like_config(older: bool) -> dict:
    """Representative HF CSM-1B config.json (only the fields a loader reads, plus noise)."""
    bb = _older_form(BB_ROPE) if older else {"rope_parameters": BB_ROPE}
    dd = _older_form(DD_ROPE) if older else {"rope_parameters": DD_ROPE}
    depth = dict(dd, model_type="csm_depth_decoder_model", hidden_size=1024, intermediate_size=8192, num_hidden_layers=4,
                 num_attention_heads=8, num_key_value_heads=2, rms_norm_eps=1e-5, head_dim=128, max_position_embeddings=33,
                 backbone_hidden_size=2048, vocab_size=2051, num_codebooks=32)  # fmt: skip
    return dict(bb, model_type="csm", architectures=["CsmForConditionalGeneration"], hidden_size=2048, intermediate_size=8192,
                num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8, head_dim=64, rms_norm_eps=1e-5,
                max_position_embeddings=2048, text_vocab_size=128256, vocab_size=2051, num_codebooks=32,
                tie_codebooks_embeddings=True, depth_decoder_config=depth, codec_config={"model_type": "mimi"})  # fmt: skip


def test_original_config():
    assert CSMConfig.from_dict(ORIGINAL) == csm_1b()
    assert CSMConfig.from_dict(csm_1b().to_dict()) == csm_1b()


@pytest.mark.parametrize("older", [False, True], ids=["rope_parameters", "rope_scaling+rope_theta"])
def test_hf_config_maps_to_the_named_flavors(older):
    cfg = CSMConfig.from_dict(hub_like_config(older))
    assert (cfg.backbone_flavor, cfg.decoder_flavor) == ("llama-1B", "llama-100M")
    assert cfg.backbone == FLAVORS["llama-1B"] and cfg.decoder == FLAVORS["llama-100M"]
    assert cfg.weight_shapes() == csm_1b().weight_shapes()
    np.testing.assert_array_equal(cfg.backbone.inv_freq(), llama3_inv_freq(64))
    np.testing.assert_array_equal(cfg.decoder.inv_freq(), llama3_inv_freq(128))


def test_hub_config_with_both_forms_uses_original_fields():
    cfg = CSMConfig.from_dict(dict(hub_like_config(older=True), **ORIGINAL))
    assert cfg == csm_1b() and cfg.backbone == FLAVORS["llama-1B"]


def test_bad_configs():
    with pytest.raises(ConfigError, match="not a CSM config"):
        CSMConfig.from_dict({"model_type": "llama"})
    bad = hub_like_config(False)
    del bad["depth_decoder_config"]
    with pytest.raises(ConfigError, match="depth_decoder_config"):
        CSMConfig.from_dict(bad)
    bad = hub_like_config(False)
    bad["rope_parameters"] = dict(BB_ROPE, rope_type="yarn")
    with pytest.raises(ConfigError, match="unsupported rope_type 'yarn'"):
        CSMConfig.from_dict(bad)


def test_mimi_config_from_hf_defaults_and_errors():
    assert mimi_config_from_hf({"model_type": "mimi"}) == mimi()
    with pytest.raises(CheckpointError, match="no GQA"):
        mimi_config_from_hf({"num_key_value_heads": 4})


# ---- against transformers ----


def _hf_inv_freq(config) -> np.ndarray:
    from transformers.models.csm.modeling_csm import CsmRotaryEmbedding

    return CsmRotaryEmbedding(config).inv_freq.numpy()


@pytest.mark.reference
@pytest.mark.parametrize("rope", ["rescaled", "default"])
def test_random_transformers_config(rope):
    transformers = pytest.importorskip("transformers")
    kw = {}
    if rope == "rescaled":
        kw = {"rope_parameters": BB_ROPE}
    hf = transformers.CsmConfig(
        hidden_size=96, intermediate_size=160, num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=2,
        text_vocab_size=500, rms_norm_eps=1e-6, **kw,
        depth_decoder_config=dict(hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=1, backbone_hidden_size=96, **({"rope_parameters": DD_ROPE} if kw else {})),
    )  # fmt: skip
    d = json.loads(json.dumps(hf.to_dict()))  # what config.json holds
    cfg = CSMConfig.from_dict(d)
    b, dd = cfg.backbone, cfg.decoder
    assert (b.num_layers, b.num_heads, b.num_kv_heads, b.embed_dim, b.intermediate_dim, b.norm_eps) == (3, 6, 2, 96, 160, 1e-6)
    assert (dd.num_layers, dd.num_heads, dd.num_kv_heads, dd.embed_dim, dd.intermediate_dim) == (2, 4, 1, 48, 80)
    assert (cfg.text_vocab_size, cfg.audio_vocab_size, cfg.audio_num_codebooks) == (500, 2051, 32)
    np.testing.assert_allclose(b.inv_freq(), _hf_inv_freq(hf), rtol=1e-6)
    np.testing.assert_allclose(dd.inv_freq(), _hf_inv_freq(hf.depth_decoder_config), rtol=1e-6)
    if rope == "rescaled":  # the rescaled form is exactly torchtune's llama3 scaling
        np.testing.assert_allclose(b.inv_freq(), llama3_inv_freq(16), rtol=1e-6)


@pytest.mark.reference
@pytest.mark.parametrize("older", [False, True], ids=["rope_parameters", "rope_scaling+rope_theta"])
def test_hub_config_inv_freq_matches_transformers(older):
    transformers = pytest.importorskip("transformers")
    d = hub_like_config(older)
    hf = transformers.CsmConfig.from_dict(dict(d, codec_config=None))
    assert hf.rope_parameters["rope_type"] == "llama3"  # transformers read the older form too
    cfg = CSMConfig.from_dict(d)
    np.testing.assert_allclose(cfg.backbone.inv_freq(), _hf_inv_freq(hf), rtol=1e-6)
    np.testing.assert_allclose(cfg.decoder.inv_freq(), _hf_inv_freq(hf.depth_decoder_config), rtol=1e-6)


@pytest.mark.reference
def test_mimi_config_from_transformers():
    transformers = pytest.importorskip("transformers")
    assert mimi_config_from_hf(transformers.MimiConfig().to_dict()) == mimi()
