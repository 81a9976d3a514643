"""Numpy Mimi vs the oracles (transformers MimiModel, moshi) on random weights (spec/mimi.md §9).

Default run: the committed tiny fixture. Slow group: full-size models built on the fly.
Tolerances (fp32): rel-L2 <= 1e-5 for latents, intermediates and audio; codes exact except
near-ties rechecked in float64.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from csm_audio import Mimi
from csm_core.config import mimi
from csm_core.testing.mimi import load_mimi_oracle, mimi_test_audio, random_mimi_weights, unexplained_code_flips

CLIPS = ("short", "exact", "long")


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def oracle():
    return load_mimi_oracle("mimi_tiny")


@pytest.fixture(scope="module")
def weights(oracle):
    return random_mimi_weights(oracle["config"], oracle["seed"])


@pytest.fixture(scope="module")
def model(oracle, weights):
    return Mimi(oracle["config"], weights)


@pytest.mark.parametrize("clip", CLIPS)
def test_encoder_stages_match_oracle(model, oracle, clip):
    stages = model.encode_stages(oracle[f"audio_{clip}"])
    assert rel_l2(stages["seanet"], oracle[f"seanet_{clip}"]) <= 1e-5
    assert rel_l2(stages["transformer"], oracle[f"enc_transformer_{clip}"]) <= 1e-5
    latent, ref = stages["latent"], oracle[f"latent_{clip}"]
    assert rel_l2(latent, ref) <= 1e-5
    assert np.abs(latent - ref).max() <= 1e-4 * np.abs(ref).max()


@pytest.mark.parametrize("clip", CLIPS)
@pytest.mark.parametrize("k", [1, 8, 32])
def test_codes_match_oracle(model, oracle, weights, clip, k):
    audio, ref = oracle[f"audio_{clip}"], oracle[f"codes{k}_{clip}"]
    codes = model.encode(audio, num_codebooks=k)
    assert codes.shape == ref.shape == (k, -(-len(audio) // 1920))
    assert codes.dtype == np.int64
    assert unexplained_code_flips(weights, oracle["config"], oracle[f"latent_{clip}"], codes, ref) == []
    np.testing.assert_array_equal(codes[0], ref[0])  # the semantic code, separately


# the fixture decodes the long clip with 32 codebooks only
@pytest.mark.parametrize("clip,k", [(c, k) for c in CLIPS for k in (1, 8, 32) if c != "long" or k == 32])
def test_decode_of_reference_codes(model, oracle, clip, k):
    key = f"decoded{k}_{clip}"
    audio = model.decode(oracle[f"codes{k}_{clip}"])
    assert audio.dtype == np.float32
    assert audio.shape == (oracle[f"codes{k}_{clip}"].shape[1] * 1920,)
    assert rel_l2(audio, oracle[key]) <= 1e-5


@pytest.mark.parametrize("clip", CLIPS)
def test_decoder_transformer_matches_oracle(model, oracle, clip):
    # a random decoder's output is mostly DC, so also check the transformer output directly
    stages = model.decode_stages(oracle[f"codes32_{clip}"])
    assert rel_l2(stages["transformer"], oracle[f"dec_transformer32_{clip}"]) <= 1e-5


# ---------------------------------------------------------------- full size (slow, needs torch)


def _reference_tool():
    path = Path(__file__).resolve().parents[2] / "tools" / "make_mimi_reference.py"
    spec = importlib.util.spec_from_file_location("make_mimi_reference", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def full():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    tool = _reference_tool()
    cfg = mimi()
    w = random_mimi_weights(cfg, 1)
    return {"tool": tool, "weights": w, "ours": Mimi(cfg, w), "hf": tool.hf_model(cfg, w), "config": cfg}


@pytest.mark.slow
@pytest.mark.reference
@pytest.mark.parametrize("length", [24_000, 240_000, 504_000])  # not a multiple of 1920, a multiple, 21 s
def test_full_size_matches_transformers(full, length):
    tool, ours = full["tool"], full["ours"]
    audio = mimi_test_audio(length, seed=length)
    ref = tool.hf_encode(full["hf"], audio)
    stages = ours.encode_stages(audio)
    assert rel_l2(stages["seanet"], ref["seanet"]) <= 1e-5
    assert rel_l2(stages["transformer"], ref["enc_transformer"]) <= 1e-5
    assert rel_l2(stages["latent"], ref["latent"]) <= 1e-5
    print(f"\nL={length}: latent rel-L2 {rel_l2(stages['latent'], ref['latent']):.2e}", end="")
    for k in (1, 8, 32):
        codes = ours.encode(audio, k)
        flips = unexplained_code_flips(full["weights"], full["config"], ref["latent"], codes, ref[f"codes{k}"])
        assert flips == [], f"K={k}: code flips that are not near-ties at {flips[:5]}"
        dec = tool.hf_decode(full["hf"], ref[f"codes{k}"])
        audio_k = ours.decode(ref[f"codes{k}"])
        stages = ours.decode_stages(ref[f"codes{k}"])
        assert rel_l2(stages["transformer"], dec["dec_transformer"]) <= 1e-5
        assert rel_l2(audio_k, dec["decoded"]) <= 1e-5
        print(f"; K={k} codes equal {np.mean(codes == ref[f'codes{k}']):.4f}, decode rel-L2 "
              f"{rel_l2(audio_k, dec['decoded']):.2e}", end="")


@pytest.mark.slow
@pytest.mark.reference
def test_full_size_matches_moshi(full):
    pytest.importorskip("moshi")
    tool = full["tool"]
    moshi = tool.moshi_model(full["config"], full["weights"])
    audio = mimi_test_audio(240_000, seed=7)  # a multiple of 1920: every moshi version pads alike
    latent, codes = tool.moshi_encode(moshi, audio, 32)
    assert rel_l2(full["ours"].encode_latent(audio), latent) <= 1e-5
    flips = unexplained_code_flips(full["weights"], full["config"], latent, full["ours"].encode(audio), codes)
    assert flips == []
    assert rel_l2(full["ours"].decode(codes), tool.moshi_decode(moshi, codes)) <= 1e-5


@pytest.mark.slow
def test_full_size_streaming_30s_one_frame_at_a_time(full):
    ours = full["ours"]
    codes = np.random.default_rng(3).integers(0, 2048, (32, 375))  # 30 s
    whole = ours.decode(codes)
    dec = ours.streaming_decoder()
    streamed = np.concatenate([dec.decode(codes[:, t : t + 1]) for t in range(codes.shape[1])])
    assert np.abs(streamed - whole).max() <= 1e-5
