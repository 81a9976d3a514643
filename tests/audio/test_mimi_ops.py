"""Mimi building blocks against direct (loop) definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from csm_audio.mimi.activations import elu, gelu
from csm_audio.mimi.conv import Conv1d, ConvTranspose1d, conv_out_length

rng = np.random.default_rng(0)


def test_gelu_is_the_erf_form():
    x = np.linspace(-12, 12, 20001).astype(np.float32)
    exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.astype(np.float64)])
    assert np.abs(gelu(x) - exact).max() <= 3e-7 * 12
    tanh_form = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    assert np.abs(tanh_form - exact).max() > 1e-4  # the approximation this must not be


def test_elu():
    x = rng.normal(0, 3, 10000).astype(np.float32)
    np.testing.assert_allclose(elu(x), np.where(x > 0, x, np.expm1(x.astype(np.float64))), atol=1.2e-7, rtol=1e-7)


def _direct_conv(x, w, b, stride, mode):
    """Causal conv by its definition: pad left k−s, right up to a full last window; x [L, Cin]."""
    cout, cin, k = w.shape
    n_out, extra = conv_out_length(x.shape[0], k, stride)
    xp = np.pad(x.astype(np.float64), ((k - stride, extra), (0, 0)), mode="edge" if mode == "replicate" else "constant")
    y = np.zeros((n_out, cout))
    for t in range(n_out):
        y[t] = np.einsum("kc,ock->o", xp[t * stride : t * stride + k], w)
    return y + (0 if b is None else b)


@pytest.mark.parametrize("cin,cout,k,s", [(1, 8, 7, 1), (16, 8, 3, 1), (8, 12, 8, 4), (64, 16, 10, 5), (12, 12, 4, 2)])
@pytest.mark.parametrize("length", [1, 37, 120, 121])
@pytest.mark.parametrize("mode", ["constant", "replicate"])
def test_conv1d_matches_definition(cin, cout, k, s, length, mode):
    w = rng.normal(0, 0.3, (cout, cin, k)).astype(np.float32)
    b = rng.normal(0, 0.1, cout).astype(np.float32)
    x = rng.normal(0, 1, (length, cin)).astype(np.float32)
    y = Conv1d(w, b, s, pad_mode=mode).forward(x)
    np.testing.assert_allclose(y, _direct_conv(x, w, b, s, mode), atol=2e-5, rtol=1e-5)


def test_conv1d_streaming_equals_whole():
    w = rng.normal(0, 0.3, (6, 5, 7)).astype(np.float32)
    conv = Conv1d(w, None, 1)
    x = rng.normal(0, 1, (100, 5)).astype(np.float32)
    state, parts = conv.init_state(), []
    for a, b in [(0, 1), (1, 40), (40, 41), (41, 100)]:
        y, state = conv.step(x[a:b], state)
        parts.append(y)
    np.testing.assert_allclose(np.concatenate(parts), conv.forward(x), atol=1e-6, rtol=0)


def _direct_convtr(x, w, b, stride, depthwise):
    """Transposed conv by its definition, first T·s outputs kept; x [T, Cin]."""
    T = x.shape[0]
    cin, cout_g, k = w.shape
    cout = cin if depthwise else cout_g
    y = np.zeros(((T - 1) * stride + k, cout))
    for t in range(T):
        for j in range(k):
            y[t * stride + j] += x[t] * w[:, 0, j] if depthwise else x[t] @ w[:, :, j]
    return y[: T * stride] + (0 if b is None else b)


@pytest.mark.parametrize("cin,cout,k,s,depthwise", [(8, 4, 16, 8, False), (6, 3, 10, 5, False), (7, 1, 4, 2, True)])
def test_convtranspose_matches_definition_and_streams(cin, cout, k, s, depthwise):
    w = rng.normal(0, 0.3, (cin, cout, k)).astype(np.float32)
    b = None if depthwise else rng.normal(0, 0.1, cout).astype(np.float32)
    x = rng.normal(0, 1, (23, cin)).astype(np.float32)
    conv = ConvTranspose1d(w, b, s, groups=cin if depthwise else 1)
    whole = conv.forward(x)
    np.testing.assert_allclose(whole, _direct_convtr(x, w, b, s, depthwise), atol=2e-5, rtol=1e-5)
    state, parts = conv.init_state(), []
    for a, c in [(0, 1), (1, 2), (2, 20), (20, 23)]:
        y, state = conv.step(x[a:c], state)
        parts.append(y)
    np.testing.assert_allclose(np.concatenate(parts), whole, atol=1e-6, rtol=0)


@pytest.mark.parametrize("rows", [1, 2, 4, 5])
def test_matmul_few_rows_path(rows):
    from csm_audio.mimi.linalg import matmul

    x = rng.normal(0, 1, (rows, 300)).astype(np.float32)
    w = rng.normal(0, 1, (300, 1000)).astype(np.float32)  # > 1 MB: the weight-streaming path
    np.testing.assert_allclose(matmul(x, w), x.astype(np.float64) @ w, rtol=1e-4, atol=1e-3)
