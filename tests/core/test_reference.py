"""The numpy reference CSM on its own: caches, batching with left padding, errors, random models."""

from __future__ import annotations

import numpy as np
import pytest

from csm_core.config import CSMConfig, csm_tiny
from csm_core.protocols import FrameModel, LogitsProbe, SamplingParams
from csm_core.reference import CSMReference, apply_rope
from csm_core.testing.csm import frame_row, make_prompt, random_csm_weights, run_frames

GREEDY = SamplingParams(temperature=0.0, mask_undecodable=False)


@pytest.fixture(scope="module")
def config():
    return csm_tiny()


@pytest.fixture(scope="module")
def weights(config):
    return random_csm_weights(config, seed=11)


@pytest.fixture(scope="module")
def model(config, weights):
    return CSMReference(config, weights)


def left_pad(tokens: np.ndarray, mask: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    pad = length - tokens.shape[1]
    return (
        np.pad(tokens, ((0, 0), (pad, 0), (0, 0))),
        np.pad(mask, ((0, 0), (pad, 0), (0, 0))),  # all-False rows = padding
    )


# ---- random models ----

def test_random_weights_are_seeded_and_shaped():
    config = CSMConfig(backbone_flavor="tiny-backbone", decoder_flavor="tiny-decoder", text_vocab_size=1000)
    a, b, c = (random_csm_weights(config, s) for s in (5, 5, 6))
    shapes = config.weight_shapes()
    assert list(a) == list(shapes)
    for name, shape in shapes.items():
        assert a[name].shape == shape and a[name].dtype == np.float32, name
        np.testing.assert_array_equal(a[name], b[name])
    assert not np.array_equal(a["projection.weight"], c["projection.weight"])
    scale = a["backbone.layers.0.sa_norm.scale"]
    assert 0.9 <= scale.min() and scale.max() <= 1.1 and scale.std() > 0.03
    w = a["backbone.layers.0.attn.q_proj.weight"]
    assert abs(w.std() - 0.02) < 0.002 and abs(w.mean()) < 0.002


def test_undecodable_codes_have_zero_head_entries_and_are_never_sampled(config, weights, model):
    assert not weights["codebook0_head.weight"][2048:].any()
    assert not weights["audio_head"][:, :, 2048:].any()
    assert weights["codebook0_head.weight"][:2048].any()
    tokens, mask = make_prompt(config, np.random.default_rng(1))
    sampled = run_frames(model, tokens, mask, 4, SamplingParams(temperature=1.0, topk=2051, mask_undecodable=False))
    assert sampled.max() < 2048


# ---- protocol and caches ----

def test_implements_protocols(model):
    assert isinstance(model, FrameModel) and isinstance(model, LogitsProbe)


def test_position_advances_by_rows_fed(config, model):
    tokens, mask = make_prompt(config, np.random.default_rng(2))
    model.reset(1, seed=0)
    assert model.position == 0
    codes = model.generate_frame(tokens, mask, GREEDY)
    assert codes.shape == (1, config.audio_num_codebooks) and codes.dtype == np.int32
    assert model.position == tokens.shape[1]
    model.generate_frame(*frame_row(codes), GREEDY)
    assert model.position == tokens.shape[1] + 1


def test_prefill_in_one_pass_equals_token_by_token(config, model):
    tokens, mask = make_prompt(config, np.random.default_rng(3))
    emb = model.embed(tokens, mask)  # [1, S, Db]
    full = model.backbone.forward(emb, model.backbone.new_cache(1, 64))
    cache = model.backbone.new_cache(1, 64)
    steps = np.concatenate([model.backbone.forward(emb[:, i : i + 1], cache) for i in range(emb.shape[1])], axis=1)
    np.testing.assert_allclose(steps, full, atol=1e-5, rtol=0)
    # the decoder too: one pass over [h, c0..c30] equals the frame loop's step-by-step logits
    model.reset(1, seed=0)
    codes = model.generate_frame(tokens, mask, GREEDY)
    _, depth = model.teacher_forced_logits(tokens, mask, codes)
    np.testing.assert_array_equal(depth.argmax(-1)[0], codes[0, 1:])


def test_chunked_prompt_gives_the_same_frames(config, model):
    tokens, mask = make_prompt(config, np.random.default_rng(4))
    whole = run_frames(model, tokens, mask, 3)
    model.reset(1, seed=0)
    model.generate_frame(tokens[:, :10], mask[:, :10], GREEDY)  # its frame is discarded
    frames = [model.generate_frame(tokens[:, 10:], mask[:, 10:], GREEDY)]
    for _ in range(2):
        frames.append(model.generate_frame(*frame_row(frames[-1]), GREEDY))
    np.testing.assert_array_equal(np.stack(frames, axis=1), whole)


def test_teacher_forced_logits_leave_generation_state_alone(config, model):
    tokens, mask = make_prompt(config, np.random.default_rng(5))
    model.reset(1, seed=0)
    model.generate_frame(tokens, mask, GREEDY)
    pos = model.position
    model.teacher_forced_logits(tokens, mask, np.ones((1, config.audio_num_codebooks), np.int64))
    assert model.position == pos


# ---- batching ----

def test_left_padded_batch_equals_each_prompt_alone(config, model):
    rng = np.random.default_rng(6)
    a = make_prompt(config, rng, context=((5, 3),), target_text_len=4)  # S = 13
    b = make_prompt(config, rng, context=((7, 5), (6, 4)), target_text_len=8)  # S = 32
    S = b[0].shape[1]
    pa = left_pad(*a, S)
    tokens = np.concatenate([pa[0], b[0]])
    mask = np.concatenate([pa[1], b[1]])
    codes = np.stack([run_frames(model, *a, 1, seed=None)[0, 0], run_frames(model, *b, 1, seed=None)[0, 0]])

    c0, depth = model.teacher_forced_logits(tokens, mask, codes)
    for i, (t, m) in enumerate((a, b)):
        c0_i, depth_i = model.teacher_forced_logits(t, m, codes[i : i + 1])
        np.testing.assert_allclose(c0[i : i + 1], c0_i, atol=1e-4, rtol=0)
        np.testing.assert_allclose(depth[i : i + 1], depth_i, atol=1e-4, rtol=0)

    batch = run_frames(model, tokens, mask, 4)
    np.testing.assert_array_equal(batch[0], run_frames(model, *a, 4)[0])
    np.testing.assert_array_equal(batch[1], run_frames(model, *b, 4)[0])


def test_padding_rows_are_never_attended(config, model):
    """Left padding leaves the real rows' outputs as they are alone (RoPE is relative); the same rows
    made attendable (a masked-in text id) change them, so it is the mask that keeps them out."""
    tokens, mask = make_prompt(config, np.random.default_rng(7), context=((4, 2),), target_text_len=3)
    S = tokens.shape[1]
    padded_t, padded_m = left_pad(tokens, mask, S + 5)
    alone = model.backbone_hidden(tokens, mask)
    np.testing.assert_allclose(model.backbone_hidden(padded_t, padded_m)[:, 5:], alone, atol=1e-5, rtol=0)
    attended_m = padded_m.copy()
    attended_m[:, :5, -1] = True  # text id 0 in the pad rows, now real frames
    assert np.abs(model.backbone_hidden(padded_t, attended_m)[:, 5:] - alone).max() > 1e-2


# ---- errors at the boundary ----

def test_prompt_longer_than_context_raises(config, model):
    K = config.audio_num_codebooks
    tokens = np.zeros((1, 2049, K + 1), np.int64)
    mask = np.zeros_like(tokens, bool)
    mask[..., K] = True
    model.reset(1)
    with pytest.raises(ValueError, match=r"2049 positions at position 0 exceed the 2048-position context"):
        model.generate_frame(tokens, mask, GREEDY)


def test_bad_inputs_raise_clear_errors(config, model):
    K = config.audio_num_codebooks
    tokens, mask = make_prompt(config, np.random.default_rng(8))
    model.reset(2)
    with pytest.raises(ValueError, match=r"tokens have 1 rows .* but reset\(\) was given batch_size 2"):
        model.generate_frame(tokens, mask, GREEDY)
    model.reset(1)
    with pytest.raises(ValueError, match=r"tokens must have shape \(1, S>=1, 33\)"):
        model.generate_frame(tokens[..., :K], mask[..., :K], GREEDY)
    with pytest.raises(ValueError, match="mask must be bool"):
        model.generate_frame(tokens, mask.astype(np.int64), GREEDY)
    bad = tokens.copy()
    bad[0, 0, K] = config.text_vocab_size
    with pytest.raises(ValueError, match=r"text id \d+ at tokens\[0, 0, 32\] is out of range \[0, \d+\)"):
        model.generate_frame(bad, mask, GREEDY)
    with pytest.raises(ValueError, match=r"codes must have shape \(1, 32\), got \(1, 31\)"):
        model.teacher_forced_logits(tokens, mask, np.zeros((1, K - 1), np.int64))


def test_missing_or_misshapen_weights_are_named(config, weights):
    partial = dict(weights)
    del partial["decoder.norm.scale"]
    with pytest.raises(KeyError, match="decoder.norm.scale"):
        CSMReference(config, partial)
    wrong = dict(weights)
    wrong["projection.weight"] = weights["projection.weight"].T
    with pytest.raises(ValueError, match="projection.weight"):
        CSMReference(config, wrong)


# ---- building blocks ----

def test_interleaved_rope_rotates_pairs():
    x = np.arange(8, dtype=np.float32).reshape(1, 1, 1, 8)  # pairs (0,1) (2,3) (4,5) (6,7)
    angle = np.array([[np.pi / 2, 0.0, np.pi, np.pi / 3]], np.float32)
    out = apply_rope(x, np.cos(angle), np.sin(angle))[0, 0, 0]
    c, s = np.cos(np.pi / 3), np.sin(np.pi / 3)
    expect = [-1, 0, 2, 3, -4, -5, 6 * c - 7 * s, 7 * c + 6 * s]
    np.testing.assert_allclose(out, expect, atol=1e-5)


def test_load_oracle_names_a_missing_fixture(tmp_path, monkeypatch):
    from csm_core.testing.csm import load_oracle

    monkeypatch.setenv("CSM_FIXTURES", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="nope_oracle.npz.*make_reference.py"):
        load_oracle("nope")
