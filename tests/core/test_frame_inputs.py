"""One set of FrameModel / LogitsProbe input checks (csm_core.frame_inputs) for every backend: the
numpy reference, csm-cpu and csm-mlx (on mlx[cpu]) refuse the same bad inputs with the same error,
before any cache changes."""

from __future__ import annotations

import numpy as np
import pytest

from csm_core.config import csm_tiny
from csm_core.frame_inputs import check_frame_inputs, check_probe_codes, check_token_values
from csm_core.protocols import SamplingParams
from csm_core.testing.csm import make_prompt, random_csm_weights

GREEDY = SamplingParams(temperature=0)
CFG = csm_tiny()
K, V, T = CFG.audio_num_codebooks, CFG.audio_vocab_size, CFG.text_vocab_size
W = CFG.backbone.max_seq_len


# name -> (module, class, keyword arguments); a backend whose package is missing is skipped
BACKENDS = {
    "reference": ("csm_core.reference", "CSMReference", {}),
    "cpu": ("csm_cpu.backend", "CpuBackend", {"quant": "f32", "threads": 1}),
    "mlx": ("csm_mlx.backend", "MlxBackend", {}),
}


@pytest.fixture(scope="module", params=list(BACKENDS))
def backend(request):
    module, cls, kwargs = BACKENDS[request.param]
    return getattr(pytest.importorskip(module), cls)(CFG, random_csm_weights(CFG, 0), **kwargs)


@pytest.fixture(scope="module")
def prompt():
    return make_prompt(CFG, np.random.default_rng(3))


def _with(a, index, value):
    a = a.copy()
    a[index] = value
    return a


def frame_cases(tokens, mask):
    """(what, tokens, mask, batch of reset(), exact message)"""
    t, m = tokens, mask
    S = t.shape[1]
    return [
        ("codebook columns missing", t[..., :K], m[..., :K], 1, f"tokens must have shape (1, S>=1, {K + 1}), got (1, {S}, {K})"),
        ("2-D tokens", t[0], m[0], 1, f"tokens must have shape (1, S>=1, {K + 1}), got ({S}, {K + 1})"),
        ("no rows", t[:, :0], m[:, :0], 1, f"tokens must have shape (1, S>=1, {K + 1}), got (1, 0, {K + 1})"),
        ("batch differs from reset", t, m, 2, f"tokens have 1 rows (shape (1, {S}, {K + 1})) but reset() was given batch_size 2"),
        ("float tokens", t.astype(np.float32), m, 1, "tokens must be integers, got dtype float32"),
        ("mask shape", t, m[:, :-1], 1, f"mask must have the shape of tokens (1, {S}, {K + 1}), got (1, {S - 1}, {K + 1})"),
        ("integer mask", t, m.astype(np.int64), 1, "mask must be boolean, got dtype int64"),
        ("text id too large", _with(t, (0, 2, K), T), m, 1, f"text id {T} at tokens[0, 2, {K}] is out of range [0, {T})"),
        ("negative audio code", _with(t, (0, 9, 4), -3), m, 1, f"audio code -3 at tokens[0, 9, 4] is out of range [0, {V})"),
        ("longer than the window", np.zeros((1, W + 1, K + 1), np.int64), np.ones((1, W + 1, K + 1), bool), 1,
         f"{W + 1} positions at position 0 exceed the {W}-position context; shorten the prompt or reset()"),
    ]  # fmt: skip


def test_frame_cases_are_refused_identically(backend, prompt):
    tokens, mask = prompt
    assert mask[0, 9, 4] and mask[0, 2, K]  # the planted ids are masked in, so they count
    for what, t, m, batch, message in frame_cases(tokens, mask):
        backend.reset(batch, seed=0)
        with pytest.raises(ValueError) as err:
            backend.generate_frame(t, m, GREEDY)
        assert str(err.value) == message, what
        assert backend.position == 0, what  # nothing was fed


def test_masked_out_ids_are_not_checked(backend, prompt):
    """An id where the mask is False may be anything (pad ids): every backend accepts it."""
    tokens, mask = prompt
    assert not mask[0, 0, 0]
    backend.reset(1, seed=0)
    backend.generate_frame(_with(tokens, (0, 0, 0), -(10**9)), mask, GREEDY)
    assert backend.position == tokens.shape[1]


def test_window_counts_from_the_current_position(backend, prompt):
    tokens, mask = prompt
    S = tokens.shape[1]
    backend.reset(1, seed=0)
    backend.generate_frame(tokens, mask, GREEDY)
    rest = W - S + 1
    with pytest.raises(ValueError) as err:
        backend.generate_frame(np.zeros((1, rest, K + 1), np.int64), np.ones((1, rest, K + 1), bool), GREEDY)
    assert str(err.value) == f"{rest} positions at position {S} exceed the {W}-position context; shorten the prompt or reset()"
    assert backend.position == S


def test_probe_codes_are_refused_identically(backend, prompt):
    tokens, mask = prompt
    good = np.ones((1, K), np.int64)
    cases = [
        (good[:, :-1], f"codes must have shape (1, {K}), got (1, {K - 1})"),
        (good.astype(np.float64), "codes must be integers, got dtype float64"),
        (_with(good, (0, 7), V), f"code {V} at codes[0, 7] is out of range [0, {V})"),
    ]
    for codes, message in cases:
        with pytest.raises(ValueError) as err:
            backend.teacher_forced_logits(tokens, mask, codes)
        assert str(err.value) == message
    with pytest.raises(ValueError) as err:  # the probe checks its tokens with the same rules
        backend.teacher_forced_logits(tokens.astype(np.float32), mask, good)
    assert str(err.value) == "tokens must be integers, got dtype float32"


def test_probe_accepts_any_batch(backend, prompt):
    tokens, mask = prompt
    t2, m2 = np.concatenate([tokens, tokens]), np.concatenate([mask, mask])
    backend.reset(1, seed=0)
    c0, depth = backend.teacher_forced_logits(t2, m2, np.ones((2, K), np.int64))
    assert c0.shape == (2, V) and depth.shape == (2, K - 1, V)
    np.testing.assert_allclose(c0[0], c0[1], rtol=1e-5, atol=1e-5)


def test_checks_return_zeroed_int64_tokens():
    tokens, mask = make_prompt(CFG, np.random.default_rng(4))
    t, m = check_frame_inputs(_with(tokens, (0, 0, 0), 99999).astype(np.int32), mask, CFG)
    assert t.dtype == np.int64 and m.dtype == np.bool_
    assert t[0, 0, 0] == 0 and (t[mask] == tokens[mask]).all()
    assert check_probe_codes(np.zeros((2, K), np.uint8), CFG, 2).dtype == np.int64


def test_value_message_names_the_array_given():
    t = np.zeros((3, K + 1), np.int64)
    with pytest.raises(ValueError, match=rf"^text id {T + 5} at feeds\[2\].tokens\[1, {K}\] is out of range"):
        check_token_values(_with(t, (1, K), T + 5), np.ones_like(t, bool), CFG, "feeds[2].tokens")
