"""Loader entry points on synthetic checkpoints of every supported arrangement (tiny configs, no torch)."""

from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pytest

from csm_core.config import CSMConfig, MimiConfig, mimi_tiny
from csm_core.weights import (
    CheckpointError,
    convert_weights,
    csm_canonical_to_hf,
    find_csm_weights,
    find_mimi_weights,
    load_csm_checkpoint,
    load_mimi_checkpoint,
    mimi_canonical_to_hf,
    mimi_config_beside,
    mimi_weight_shapes,
    save_safetensors,
    to_float32,
)
from weights_helpers import BB_ROPE, DD_ROPE, random_weights, small_csm


def hf_mimi_config(m: MimiConfig) -> dict:
    return {
        "model_type": "mimi", "hidden_size": m.dimension, "num_filters": m.n_filters, "num_hidden_layers": m.num_transformer_layers,
        "num_attention_heads": m.num_heads, "num_key_value_heads": m.num_heads, "intermediate_size": m.dim_feedforward,
        "codebook_dim": m.codebook_dim, "vector_quantization_hidden_dimension": m.codebook_dim, "upsample_groups": m.dimension,
        "num_quantizers": m.num_codebooks, "upsampling_ratios": list(m.ratios), "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
    }  # fmt: skip


def hf_csm_config(cfg: CSMConfig, m: MimiConfig) -> dict:
    def llama(c, rope):
        return {"hidden_size": c.embed_dim, "intermediate_size": c.intermediate_dim, "num_hidden_layers": c.num_layers,
                "num_attention_heads": c.num_heads, "num_key_value_heads": c.num_kv_heads, "rms_norm_eps": c.norm_eps,
                "rope_parameters": rope}  # fmt: skip

    depth = dict(llama(cfg.decoder, DD_ROPE), model_type="csm_depth_decoder_model", backbone_hidden_size=cfg.backbone.embed_dim)
    return dict(llama(cfg.backbone, BB_ROPE), model_type="csm", text_vocab_size=cfg.text_vocab_size, vocab_size=2051,
                num_codebooks=32, depth_decoder_config=depth, codec_config=hf_mimi_config(m))  # fmt: skip


@pytest.fixture(scope="module")
def csm_weights():
    return random_weights(small_csm().weight_shapes(), seed=1)


@pytest.fixture(scope="module")
def mimi_weights():
    return random_weights(mimi_weight_shapes(mimi_tiny()), seed=2)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)


def write_shards(directory, tensors: dict, stem: str) -> None:
    names = sorted(tensors)
    half = len(names) // 2
    weight_map = {}
    for i, part in enumerate((names[:half], names[half:]), 1):
        fname = f"{stem}-0000{i}-of-00002.safetensors"
        save_safetensors(directory / fname, {k: tensors[k] for k in part})
        weight_map.update(dict.fromkeys(part, fname))
    (directory / f"{stem}.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def test_original_directory(tmp_path, csm_weights):
    cfg = small_csm()
    save_safetensors(tmp_path / "model.safetensors", csm_weights)
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_dict()))
    got_cfg, got = load_csm_checkpoint(tmp_path)
    assert got_cfg == cfg and _same(got, csm_weights)


def test_hf_save_pretrained_directory(tmp_path, csm_weights, mimi_weights):
    cfg, m = small_csm(), mimi_tiny()
    hf = csm_canonical_to_hf(csm_weights, cfg, tied_copies="decoder")
    hf.update({"codec_model." + k: v for k, v in mimi_canonical_to_hf(mimi_weights, m).items()})
    save_safetensors(tmp_path / "model.safetensors", hf)
    (tmp_path / "config.json").write_text(json.dumps(hf_csm_config(cfg, m)))
    got_cfg, got = load_csm_checkpoint(tmp_path)
    assert got_cfg.backbone == cfg.backbone and got_cfg.decoder == cfg.decoder
    assert _same(got, csm_weights)
    assert _same(load_mimi_checkpoint(tmp_path), mimi_weights)  # codec_config gives the tiny Mimi config


def test_sesame_snapshot_with_both_layouts(tmp_path, csm_weights, mimi_weights):
    """sesame/csm-1b: original model.safetensors + transformers-0000N-of-00002 shards (with Mimi) side by side."""
    cfg, m = small_csm(), mimi_tiny()
    save_safetensors(tmp_path / "model.safetensors", csm_weights)
    hf = csm_canonical_to_hf(csm_weights, cfg)  # both tied copies, as on the hub
    hf.update({"codec_model." + k: v for k, v in mimi_canonical_to_hf(mimi_weights, m).items()})
    write_shards(tmp_path, hf, "transformers")
    (tmp_path / "config.json").write_text(json.dumps(dict(hf_csm_config(cfg, m), **cfg.to_dict())))

    assert find_csm_weights(tmp_path).name == "model.safetensors"
    assert find_mimi_weights(tmp_path).name == "transformers.safetensors.index.json"
    got_cfg, got = load_csm_checkpoint(tmp_path)
    assert got_cfg == cfg and _same(got, csm_weights)
    _, via_hf = load_csm_checkpoint(tmp_path / "transformers.safetensors.index.json")
    assert _same(via_hf, csm_weights)
    assert _same(load_mimi_checkpoint(tmp_path), mimi_weights)


def test_mimi_files(tmp_path, mimi_weights):
    m = mimi_tiny()
    kyutai = tmp_path / "kyutai"
    kyutai.mkdir()
    save_safetensors(kyutai / "tokenizer-e351c8d8-checkpoint125.safetensors", mimi_weights)
    assert _same(load_mimi_checkpoint(kyutai, m), mimi_weights)
    assert _same(load_mimi_checkpoint(kyutai / "tokenizer-e351c8d8-checkpoint125.safetensors", m), mimi_weights)

    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    save_safetensors(hf_dir / "model.safetensors", mimi_canonical_to_hf(mimi_weights, m))
    (hf_dir / "config.json").write_text(json.dumps(hf_mimi_config(m)))
    assert _same(load_mimi_checkpoint(hf_dir), mimi_weights)  # config from config.json


def test_mimi_config_beside(tmp_path):
    m = mimi_tiny()
    weights = tmp_path / "model.safetensors"
    assert mimi_config_beside(weights) is None  # no config.json: the caller picks the default
    (tmp_path / "config.json").write_text(json.dumps(hf_csm_config(small_csm(), m)))
    for path in (weights, tmp_path, tmp_path / "config.json"):  # weight file, directory, the json itself
        assert mimi_config_beside(path) == m  # from the CSM config's codec_config
    (tmp_path / "config.json").write_text(json.dumps(small_csm().to_dict()))
    assert mimi_config_beside(tmp_path) is None  # an original CSM config describes no Mimi
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json: unreadable config"):
        mimi_config_beside(weights)


def test_dtype_handling(tmp_path, csm_weights):
    cfg = small_csm()
    bf16 = convert_weights(csm_weights, "bfloat16")
    save_safetensors(tmp_path / "w.safetensors", bf16)
    _, kept = load_csm_checkpoint(tmp_path / "w.safetensors", cfg)
    assert all(v.dtype == np.dtype(ml_dtypes.bfloat16) for v in kept.values())
    _, f32 = load_csm_checkpoint(tmp_path / "w.safetensors", cfg, dtype="float32")
    assert all(v.dtype == np.float32 for v in f32.values())
    name = "backbone.layers.0.attn.q_proj.weight"
    assert np.array_equal(f32[name], to_float32(bf16[name]))
    np.testing.assert_allclose(f32[name], csm_weights[name], rtol=2**-8)
    ints = convert_weights({"i": np.arange(3), "f": np.ones(2, np.float16)}, np.float32)
    assert ints["i"].dtype == np.int64 and ints["f"].dtype == np.float32


def test_config_argument_as_path(tmp_path, csm_weights):
    cfg = small_csm()
    save_safetensors(tmp_path / "w.safetensors", csm_weights)
    (tmp_path / "other.json").write_text(json.dumps(cfg.to_dict()))
    assert load_csm_checkpoint(tmp_path / "w.safetensors", tmp_path / "other.json")[0] == cfg


def test_wrong_config_names_tensor_and_shapes(tmp_path, csm_weights):
    save_safetensors(tmp_path / "model.safetensors", csm_weights)  # no config.json: defaults to csm_1b
    with pytest.raises(CheckpointError) as err:
        load_csm_checkpoint(tmp_path)
    assert "backbone.layers.0.attn.q_proj.weight: expected (2048, 2048), found (64, 64)" in str(err.value)
    assert "144 missing tensor(s)" in str(err.value)
    assert "assumed the CSM-1B preset; pass config=" in str(err.value)


def test_missing_and_nonfinite_tensors(tmp_path, csm_weights):
    cfg = small_csm()
    w = dict(csm_weights)
    del w["decoder.norm.scale"]
    save_safetensors(tmp_path / "a.safetensors", w)
    with pytest.raises(CheckpointError, match=r"a.safetensors \(original CSM layout\): 1 missing tensor\(s\):\n    decoder.norm.scale \(32,\)"):
        load_csm_checkpoint(tmp_path / "a.safetensors", cfg)
    w = dict(csm_weights)
    w["projection.weight"] = w["projection.weight"].copy()
    w["projection.weight"][0, 0] = np.nan
    save_safetensors(tmp_path / "b.safetensors", w)
    with pytest.raises(CheckpointError, match="NaN/inf.*\n    projection.weight: 1 values"):
        load_csm_checkpoint(tmp_path / "b.safetensors", cfg)
    load_csm_checkpoint(tmp_path / "b.safetensors", cfg, check_finite=False)


def test_not_found_and_unknown(tmp_path, mimi_weights):
    with pytest.raises(CheckpointError, match="no such file or directory"):
        load_csm_checkpoint(tmp_path / "absent")
    with pytest.raises(CheckpointError, match="no CSM weights found"):
        load_csm_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="no Mimi weights found"):
        load_mimi_checkpoint(tmp_path)
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unknown checkpoint format"):
        load_csm_checkpoint(tmp_path / "w.npz", small_csm())
    save_safetensors(tmp_path / "mimi.safetensors", mimi_weights)
    with pytest.raises(CheckpointError, match="not a CSM checkpoint"):
        load_csm_checkpoint(tmp_path / "mimi.safetensors", small_csm())
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{")
    save_safetensors(tmp_path / "bad" / "model.safetensors", {"x": np.zeros(1, np.float32)})
    with pytest.raises(CheckpointError, match="config.json: not valid JSON"):
        load_csm_checkpoint(tmp_path / "bad")


def test_training_wrapper_prefixes(tmp_path, csm_weights):
    wrapped = {f"module._orig_mod.{k}": v for k, v in csm_weights.items()}  # DDP around torch.compile
    save_safetensors(tmp_path / "ft.safetensors", wrapped)
    assert _same(load_csm_checkpoint(tmp_path / "ft.safetensors", small_csm())[1], csm_weights)
    partial = dict(csm_weights, **{"module.extra": np.zeros(1, np.float32)})  # not on every key: kept
    save_safetensors(tmp_path / "p.safetensors", partial)
    with pytest.raises(CheckpointError, match=r"unexpected tensor\(s\):\n    module.extra"):
        load_csm_checkpoint(tmp_path / "p.safetensors", small_csm())
