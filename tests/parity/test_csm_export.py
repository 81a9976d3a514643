"""tools/make_reference.py --export-dir: the random model written as original and hub-like HF checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest

from csm_core.config import CSMConfig, csm_tiny
from csm_core.testing.csm import load_oracle, random_csm_weights

from test_csm_reference import load_tool  # noqa: E402  (same directory)

pytestmark = pytest.mark.reference


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tool = load_tool()
    oracle = load_oracle("csm_tiny")
    config = oracle["config"]
    weights = random_csm_weights(config, oracle["seed"])
    model = tool.build_model(config, weights)
    out = tmp_path_factory.mktemp("export")
    tool.export(out, config, weights, model)
    return out, oracle, weights, model


def test_original_layout_round_trips(exported):
    from safetensors.numpy import load_file

    out, oracle, weights, _ = exported
    assert CSMConfig.from_json(out / "original" / "config.json") == csm_tiny()
    for path in (out / "original" / "model.safetensors", out / "hf" / "model.safetensors"):
        loaded = load_file(str(path))
        assert sorted(loaded) == sorted(weights)
        for k, w in weights.items():
            np.testing.assert_array_equal(loaded[k], w, err_msg=k)


def test_hf_layout_is_a_loadable_hub_like_checkpoint(exported):
    """Shards + index hold every HF tensor (both tied audio tables, codec_model.*); a fresh HF model
    built from the exported config.json and loaded strictly from the shards reproduces the oracle."""
    import torch
    from safetensors.numpy import load_file
    from transformers import CsmConfig as HFCsmConfig
    from transformers import CsmForConditionalGeneration

    out, oracle, _, model = exported
    hf = out / "hf"
    index = json.loads((hf / "transformers.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert shards == ["transformers-00001-of-00002.safetensors", "transformers-00002-of-00002.safetensors"]
    state: dict[str, np.ndarray] = {}
    for name in shards:
        part = load_file(str(hf / name))
        assert all(index["weight_map"][k] == name for k in part)
        state.update(part)
    assert set(state) == set(index["weight_map"]) == set(model.state_dict())
    assert "depth_decoder.model.embed_tokens.weight" in state and any(k.startswith("codec_model.") for k in state)
    assert index["metadata"]["total_size"] == sum(v.nbytes for v in state.values())

    data = json.loads((hf / "config.json").read_text())
    assert data["backbone_flavor"] == "tiny-backbone" and "rope_scaling" in data and "rope_parameters" not in data
    hf_only = {k: v for k, v in data.items() if k not in csm_tiny().to_dict()}
    # csm_core reads the HF fields alone to the same model (rope normalised to torchtune's form)
    parsed = CSMConfig.from_dict(hf_only)
    assert parsed.backbone == csm_tiny().backbone and parsed.decoder == csm_tiny().decoder

    fresh = CsmForConditionalGeneration(HFCsmConfig.from_dict(hf_only)).eval()
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    tool = load_tool()
    with torch.no_grad():
        emb = tool.embed_frames(fresh, oracle["tokens"], oracle["mask"])
        logits = fresh(inputs_embeds=emb).logits[:, -1]
    np.testing.assert_allclose(logits.numpy(), oracle["c0_logits"], atol=1e-5, rtol=0)
