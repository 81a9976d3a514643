"""csm_cpu._mimi kernels against their numpy twins (csm_cpu.mimi.twins), on every compiled path."""

import numpy as np
import pytest

from csm_cpu import _mimi
from csm_cpu.features import ISA_BY_NAME, active_isa, supported_isas
from csm_cpu.mimi import twins

PATHS = supported_isas()


@pytest.fixture(params=PATHS)
def isa(request):
    _mimi.set_isa(ISA_BY_NAME[request.param])
    yield request.param
    _mimi.set_isa(active_isa())


def _rng(seed=0):
    return np.random.default_rng(seed)


@pytest.mark.parametrize("fmt", ["f32", "bf16"])
@pytest.mark.parametrize("K,N,M,lda", [(7, 64, 50, 1), (192, 32, 13, 64), (64, 1, 9, 64), (40, 5, 3, 40),
                                        (512, 1536, 2, 512), (96, 37, 61, 200), (3, 16, 1, 3),
                                        (1024, 80, 13, 1024)])  # L2 panel groups of 2, 2, 1
@pytest.mark.parametrize("threads", [1, 2])
def test_gemm_windows_epilogue(isa, fmt, K, N, M, lda, threads):
    rng = _rng(K + N + M)
    w = rng.standard_normal((K, N)).astype(np.float32) / np.sqrt(K)
    a = rng.standard_normal((M - 1) * lda + K).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    scale = rng.uniform(0, 0.2, N).astype(np.float32)
    old = rng.standard_normal((M, N)).astype(np.float32)
    tol = 1e-5 if fmt == "f32" else 1e-5  # bf16: the twin rounds its weights the same way
    for act in (_mimi.ACT_NONE, _mimi.ACT_ELU, _mimi.ACT_GELU):
        mat = _mimi.Mat(w, fmt, bias=bias)
        out = np.full((M, N), np.nan, np.float32)
        _mimi.gemm(mat, a, lda, M, out, False, act, threads)
        want = twins.gemm(w, fmt, a, lda, M, bias=bias, act=act)
        np.testing.assert_allclose(out, want, rtol=tol, atol=tol * np.abs(want).max())
        mat = _mimi.Mat(w, fmt, scale=scale)  # LayerScale residual: out = old + scale · (A @ W)
        out = old.copy()
        _mimi.gemm(mat, a, lda, M, out, True, act, threads)
        want = twins.gemm(w, fmt, a, lda, M, old=old, scale=scale, act=act)
        np.testing.assert_allclose(out, want, rtol=tol, atol=tol * np.abs(want).max())


def test_gemm_checks_shapes():
    mat = _mimi.Mat(np.ones((8, 16), np.float32))
    out = np.zeros((4, 16), np.float32)
    with pytest.raises(ValueError, match="need 32 inputs"):
        _mimi.gemm(mat, np.zeros(31, np.float32), 8, 4, out)
    with pytest.raises(ValueError, match="does not hold"):
        _mimi.gemm(mat, np.zeros(64, np.float32), 8, 5, out)
    with pytest.raises(ValueError, match="fmt"):
        _mimi.Mat(np.ones((8, 16), np.float32), "q8_0")
    with pytest.raises(ValueError, match="bias has 3 values"):
        _mimi.Mat(np.ones((8, 16), np.float32), bias=np.ones(3))


def test_bf16_bits_round_to_nearest_even():
    x = np.array([1.0, 1.0 + 2**-8, 1.0 + 3 * 2**-8, -2.5e-3, 3e38], np.float32)
    import ml_dtypes

    np.testing.assert_array_equal(_mimi.bf16_bits(x), x.astype(ml_dtypes.bfloat16).view(np.uint16))
    np.testing.assert_array_equal(twins.bf16_round(x), x.astype(ml_dtypes.bfloat16).astype(np.float32))


@pytest.mark.parametrize("act", ["elu", "gelu"])
def test_activations(isa, act):
    x = np.concatenate([np.linspace(-12, 12, 20001), _rng().standard_normal(70001) * 3, [0.0, -0.0, 88.0, -100.0]])
    x = x.astype(np.float32)
    code = _mimi.ACT_ELU if act == "elu" else _mimi.ACT_GELU
    for threads in (1, 2):
        out = np.empty_like(x)
        _mimi.activation(x, out, code, threads)
        want = getattr(twins, act)(x)
        np.testing.assert_allclose(out, want, rtol=0, atol=2e-7 * np.maximum(1.0, np.abs(want)).max(initial=0) + 0)
        assert np.abs(out - want).max() <= 3e-7 * max(1.0, np.abs(x).max() / 10)
    inplace = x.copy()
    _mimi.activation(inplace, inplace, code, 2)
    np.testing.assert_array_equal(inplace, out)


def test_layer_norm():
    rng = _rng(1)
    x = (rng.standard_normal((5, 512)) * 20 + 3).astype(np.float32)
    w = rng.uniform(0.9, 1.1, 512).astype(np.float32)
    b = rng.standard_normal(512).astype(np.float32) * 0.02
    out = np.empty_like(x)
    _mimi.layer_norm(x, w, b, 1e-5, out)
    np.testing.assert_allclose(out, twins.layer_norm(x, w, b, 1e-5), rtol=1e-5, atol=1e-5)


def test_rope():
    rng = _rng(2)
    x = rng.standard_normal((3, 3 * 64)).astype(np.float32)
    ang = rng.uniform(0, 100, (3, 8)).astype(np.float32)
    cos, sin = np.cos(ang), np.sin(ang)
    got = x.copy()
    _mimi.rope(got, 128, cos, sin)  # two heads of 16 rotated, the last 64 columns untouched
    np.testing.assert_allclose(got, twins.rope(x, 128, cos, sin), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(got[:, 128:], x[:, 128:])


@pytest.mark.parametrize("first,n,context", [(0, 5, 250), (10, 3, 4), (300, 2, 250), (0, 1, 1)])
def test_attention(isa, first, n, context):
    rng = _rng(first + n)
    heads, d = 4, 64
    keys = rng.standard_normal((first + n + 3, d)).astype(np.float32)
    values = rng.standard_normal((first + n + 3, d)).astype(np.float32)
    q = rng.standard_normal((n, 3 * d)).astype(np.float32)  # a row stride wider than d, as qkv rows
    for threads in (1, 2):
        out = np.empty((n, d), np.float32)
        _mimi.attention(q, keys, values, first, heads, context, 0.25, out, threads)
        want = twins.attention(q[:, :d], keys, values, first, heads, context, 0.25)
        np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)


def test_codebook_sum_and_pick():
    rng = _rng(3)
    books = rng.standard_normal((5, 64, 16)).astype(np.float32)
    codes = rng.integers(0, 64, (3, 7))
    out = np.empty((7, 16), np.float32)
    _mimi.codebook_sum(books, codes, out)
    np.testing.assert_allclose(out, twins.codebook_sum(books, codes), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="code 64 at codebook 1, frame 2 is out of range"):
        bad = codes.copy()
        bad[1, 2] = 64
        _mimi.codebook_sum(books, bad, out)
    scores = rng.standard_normal((7, 64)).astype(np.float32)
    scores[0, 5] = scores[0, 9] = scores[0].max() + 1  # a tie: the first index wins
    r = rng.standard_normal((7, 16)).astype(np.float32)
    got = np.empty(7, np.int64)
    r2 = r.copy()
    _mimi.rvq_pick(scores, r2, books[0], got)
    want_codes, want_r = twins.rvq_pick(scores, r, books[0])
    np.testing.assert_array_equal(got, want_codes)
    assert got[0] == 5
    np.testing.assert_allclose(r2, want_r, rtol=1e-6, atol=1e-6)
