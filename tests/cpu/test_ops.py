"""Small ops (RMSNorm, RoPE, SwiGLU, attention, sampling) against numpy twins / csm_core."""

import numpy as np
import pytest

from csm_core import sampling
from csm_core.config import FLAVORS
from csm_core.protocols import SamplingParams
from csm_core.reference import apply_rope, rms_norm
from csm_cpu import _kernels
from csm_cpu.weights import rope_tables


def test_rmsnorm():
    rng = np.random.default_rng(0)
    for n in (1, 7, 64, 2048):
        x = rng.standard_normal((3, n)).astype(np.float32) * 3
        s = rng.uniform(0.9, 1.1, n).astype(np.float32)
        np.testing.assert_allclose(_kernels.rmsnorm(x, s, 1e-5), rms_norm(x, s, 1e-5), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("flavor", ["llama-1B", "llama-100M", "tiny-decoder"])
def test_rope_matches_reference(flavor):
    cfg = FLAVORS[flavor]
    cos, sin = rope_tables(cfg)
    rng = np.random.default_rng(1)
    pos = np.array([0, 1, 5, 2047], np.intc)
    v = rng.standard_normal((4, cfg.num_heads * cfg.head_dim)).astype(np.float32)
    want = np.stack([
        apply_rope(v[i].reshape(1, cfg.num_heads, 1, cfg.head_dim), cos[pos[i]][None], sin[pos[i]][None]).reshape(-1)
        for i in range(4)
    ])
    got = v.copy()
    _kernels.rope(got, cfg.head_dim, cos, sin, pos)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for chunk in (2, 6, 10, cfg.head_dim, 3 * cfg.head_dim + 4):  # the engine's row chunks (_ops.rope_rows)
        chunked = v.copy()
        _kernels.rope(chunked, cfg.head_dim, cos, sin, pos, chunk)
        np.testing.assert_array_equal(chunked, got)
    with pytest.raises(ValueError, match="outside the rope table"):
        _kernels.rope(got, cfg.head_dim, cos, sin, np.array([5000, 0, 0, 0], np.intc))


def test_swiglu():
    rng = np.random.default_rng(2)
    g = rng.standard_normal((2, 37)).astype(np.float32) * 4
    u = rng.standard_normal((2, 37)).astype(np.float32)
    want = g / (1 + np.exp(-g)) * u
    _kernels.swiglu(g, u)
    np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("hd,T", [(64, 1), (64, 37), (8, 5), (128, 300)])
def test_attention_with_padding(hd, T):
    rng = np.random.default_rng(hd + T)
    q = rng.standard_normal(hd).astype(np.float32)
    k = rng.standard_normal((T, hd)).astype(np.float32)
    v = rng.standard_normal((T, hd)).astype(np.float32)
    valid = (rng.random(T) > 0.3).astype(np.uint8)
    valid[-1] = 1
    s = (k @ q) / np.sqrt(hd)
    s[valid == 0] = -np.inf
    p = np.exp(s - s.max())
    want = (p / p.sum()) @ v
    got = _kernels.attention(q, k, v, valid, 1 / np.sqrt(hd))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not np.any(_kernels.attention(q, k, v, np.zeros(T, np.uint8), 1.0))  # nothing to attend: zeros


@pytest.mark.parametrize("temperature,topk,mask", [(0.9, 50, True), (0.7, 1, False), (1.3, 2051, True), (0.0, 50, True)])
def test_sampling_matches_exponential_race(temperature, topk, mask):
    """Same Exp(1) variates -> same code as csm_core.sampling (top-k ties kept, undecodable masked)."""
    rng = np.random.default_rng(3)
    params = SamplingParams(temperature=temperature, topk=topk, mask_undecodable=mask)
    limit = 2048 if mask else 2051
    for trial in range(200):
        logits = rng.standard_normal(2051).astype(np.float32) * 3
        if trial % 4 == 0:
            logits[rng.integers(0, 2051, 20)] = logits.max()  # ties at the top
        q = rng.exponential(size=2051).astype(np.float32)
        if params.greedy:
            want = int(sampling.sample(logits[None], params)[0])
        else:
            masked = sampling.mask_undecodable(logits[None], 2048) if mask else logits[None]
            probs = sampling.softmax(sampling.topk_mask(masked / np.float32(temperature), topk))
            want = int(sampling.exponential_race(probs, q[None])[0])
        assert _kernels.sample(logits, limit, temperature, topk, q[:limit]) == want
