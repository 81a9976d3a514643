"""Conversion round trips: original / HF checkpoint → MLX safetensors → load → same frames as the source."""

import json

import numpy as np
import pytest

pytest.importorskip("mlx.core")

from csm_core.config import csm_tiny  # noqa: E402
from csm_core.testing.csm import make_prompt, random_csm_weights, run_frames  # noqa: E402
from csm_core.weights import CheckpointError, csm_canonical_to_hf, save_safetensors  # noqa: E402
from csm_mlx.backend import MlxBackend  # noqa: E402
from csm_mlx.convert import convert, load_model  # noqa: E402
from csm_mlx.model import WeightsError  # noqa: E402


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    cfg = csm_tiny()
    w = random_csm_weights(cfg, 5)
    d = tmp_path_factory.mktemp("orig")
    save_safetensors(d / "model.safetensors", w)
    (d / "config.json").write_text(json.dumps(cfg.to_dict()))
    tokens, mask = make_prompt(cfg, np.random.default_rng(0), context=((4, 3),), target_text_len=4)
    return cfg, w, d, tokens, mask


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_convert_round_trip_gives_the_same_frames(source, tmp_path, dtype):
    cfg, w, d, tokens, mask = source
    out = convert(d, tmp_path / "mlx", dtype=dtype)
    assert out == tmp_path / "mlx" / "model.safetensors"
    assert json.loads((tmp_path / "mlx" / "config.json").read_text()) == cfg.to_dict()
    loaded = MlxBackend.load(tmp_path / "mlx")
    assert loaded.model.dtype.__str__().endswith(dtype)
    direct = MlxBackend(cfg, w, dtype=dtype)
    np.testing.assert_array_equal(run_frames(loaded, tokens, mask, 4), run_frames(direct, tokens, mask, 4))


def test_convert_from_hf_layout_and_quantized(source, tmp_path):
    cfg, w, _, tokens, mask = source
    hf = tmp_path / "hf.safetensors"
    save_safetensors(hf, csm_canonical_to_hf(w, cfg))  # half-split q/k rows, HF names
    out = convert(hf, tmp_path / "q8.safetensors", dtype="float32", quant_bits=8, group_size=32, config=cfg)
    loaded = MlxBackend.load(out)
    assert loaded.model.quantization == {"bits": 8, "group_size": 32, "mode": "affine"}
    direct = MlxBackend(cfg, w, quant_bits=8, group_size=32)
    np.testing.assert_array_equal(run_frames(loaded, tokens, mask, 3), run_frames(direct, tokens, mask, 3))


def test_unconverted_checkpoints_load_directly(source):
    cfg, w, d, tokens, mask = source
    np.testing.assert_array_equal(
        run_frames(MlxBackend.load(d), tokens, mask, 2), run_frames(MlxBackend(cfg, w), tokens, mask, 2)
    )


def test_conversion_errors_are_clear(source, tmp_path):
    cfg, w, d, _, _ = source
    with pytest.raises(ValueError, match="bits"):
        convert(d, tmp_path / "x", quant_bits=5)
    with pytest.raises(ValueError, match="unsupported dtype"):
        convert(d, tmp_path / "x", dtype="float64")
    bad = tmp_path / "bad"
    bad.mkdir()
    save_safetensors(bad / "model.safetensors", {k: v for k, v in w.items() if k != "projection.weight"})
    (bad / "config.json").write_text(json.dumps(cfg.to_dict()))
    with pytest.raises(CheckpointError, match="projection.weight"):
        convert(bad, tmp_path / "y")
    out = convert(d, tmp_path / "ok.safetensors", dtype="float32")
    import mlx.core as mx

    arrays, meta = mx.load(str(out), return_metadata=True)
    arrays.pop("decoder.norm.scale")
    mx.save_safetensors(str(tmp_path / "broken.safetensors"), arrays, metadata=meta)
    with pytest.raises(WeightsError, match="decoder.norm.scale"):
        load_model(tmp_path / "broken.safetensors")
