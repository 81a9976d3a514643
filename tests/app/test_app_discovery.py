"""Model discovery: the hub cache location, snapshots, layouts, converted files, and what a failure says."""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import pytest

from csm_app.backends import BackendError, pick_backend
from csm_app.discovery import ModelNotFound, find_snapshot, hub_cache_dir, resolve_model

from app_helpers import place_in_cache


def _touch(path, text="x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_hub_cache_dir_follows_huggingface_hub(monkeypatch, tmp_path):
    for var in ("HF_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert hub_cache_dir() == tmp_path / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert hub_cache_dir() == tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    assert hub_cache_dir() == tmp_path / "cache"


def test_find_snapshot_prefers_refs_main(tmp_path):
    repo = tmp_path / "models--org--name"
    old = (repo / "snapshots" / "aaa")
    new = (repo / "snapshots" / "bbb")
    old.mkdir(parents=True)
    new.mkdir()
    os.utime(old, (time.time() - 100, time.time() - 100))
    assert find_snapshot("org/name", tmp_path) == new  # no refs: the newest
    _touch(repo / "refs" / "main", "aaa\n")
    assert find_snapshot("org/name", tmp_path) == old
    assert find_snapshot("org/other", tmp_path) is None


def _fake_sesame_repo(root):
    """The file set of the hub repo with tiny stand-in tensors (only names matter for discovery)."""
    from csm_core.weights import save_safetensors

    root.mkdir(parents=True, exist_ok=True)
    save_safetensors(root / "model.safetensors", {"backbone.norm.scale": np.ones(2, np.float32)})
    save_safetensors(root / "transformers-00001-of-00001.safetensors",
                     {"codec_model.decoder.layers.0.conv.weight": np.ones(2, np.float32),
                      "backbone_model.norm.weight": np.ones(2, np.float32)})
    index = {"weight_map": {"codec_model.decoder.layers.0.conv.weight": "transformers-00001-of-00001.safetensors",
                            "backbone_model.norm.weight": "transformers-00001-of-00001.safetensors"}}
    _touch(root / "transformers.safetensors.index.json", json.dumps(index))
    _touch(root / "config.json", json.dumps({"model_type": "csm", "backbone_flavor": "llama-1B", "decoder_flavor": "llama-100M"}))
    _touch(root / "tokenizer.json", "{}")
    return root


def test_sesame_snapshot_in_the_cache(hub_cache, tmp_path):
    place_in_cache(hub_cache, "sesame/csm-1b", _fake_sesame_repo(tmp_path / "repo"))
    files = resolve_model("sesame/csm-1b", offline=True)
    assert files.layout == "sesame"
    assert files.weights.name == "model.safetensors"
    assert files.mimi.name == "transformers.safetensors.index.json"
    assert files.tokenizer.name == "tokenizer.json"
    assert files.root.parent.parent == hub_cache / "models--sesame--csm-1b"


def test_hf_save_pretrained_directory_carries_mimi(tmp_path):
    from csm_core.weights import save_safetensors

    root = tmp_path / "hf"
    root.mkdir()
    save_safetensors(root / "model.safetensors", {"codec_model.x": np.ones(1, np.float32),
                                                  "backbone_model.norm.weight": np.ones(1, np.float32)})
    _touch(root / "config.json", json.dumps({"model_type": "csm"}))
    files = resolve_model(root, tokenizer=_touch(tmp_path / "tok.json", "{}"))
    assert files.layout == "hf" and files.mimi == files.weights == root / "model.safetensors"


def test_converted_files(tmp_path):
    gguf = _touch(tmp_path / "csm-q8_0.gguf")
    files = resolve_model(gguf, mimi=_touch(tmp_path / "m.safetensors"), tokenizer=_touch(tmp_path / "t.model"))
    assert files.layout == "gguf"
    assert pick_backend("auto", "gguf") == "cpu"
    with pytest.raises(BackendError, match="runs on the cpu backend only"):
        pick_backend("mlx", "gguf")
    from csm_core.weights import save_safetensors

    mlx_file = tmp_path / "mlx" / "model.safetensors"
    mlx_file.parent.mkdir()
    save_safetensors(mlx_file, {"w": np.ones(1, np.float32)}, metadata={"format": "csm-mlx/1"})
    assert resolve_model(mlx_file.parent, need_codec=False, need_tokenizer=False).layout == "mlx"
    assert resolve_model(mlx_file, need_codec=False, need_tokenizer=False).layout == "mlx"


def test_offline_and_missing_hub_client_never_download(hub_cache, monkeypatch):
    with pytest.raises(ModelNotFound, match="offline mode") as e:
        resolve_model("sesame/csm-1b")  # HF_HUB_OFFLINE=1 from the fixture
    assert f"{hub_cache}/models--sesame--csm-1b/snapshots/<rev>/ (not in the cache)" in str(e.value)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # the optional [hub] extra absent
    with pytest.raises(ModelNotFound, match=r"hub client is not installed.*csm-app\[hub\]"):
        resolve_model("sesame/csm-1b")


def test_explicit_paths_must_exist(tiny_model, tmp_path):
    with pytest.raises(ModelNotFound, match="Mimi checkpoint .*nope.safetensors does not exist"):
        resolve_model(tiny_model, mimi=tmp_path / "nope.safetensors")
    with pytest.raises(ModelNotFound, match="tokenizer file .*nope.json does not exist"):
        resolve_model(tiny_model, tokenizer=tmp_path / "nope.json")
    with pytest.raises(ModelNotFound, match="neither an existing file or directory nor a Hugging Face repo id"):
        resolve_model("not a/repo/id")


def test_original_layout_finds_files_beside_it(tiny_model):
    files = resolve_model(tiny_model)
    assert files.layout == "original"
    assert (files.weights.name, files.mimi.name, files.tokenizer.name) == (
        "model.safetensors", "mimi.safetensors", "tokenizer.model")
