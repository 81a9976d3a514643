"""The Cython kernels and the CPU backend at their boundary: any array from Python (wrong shape,
dtype, layout, alignment, NaN/inf, hostile sizes) is a Python error or a correct result, never
a crash or a write outside the output buffers (checked with guard bytes around every output).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from csm_core.protocols import SamplingParams
from csm_cpu import _kernels

boundary = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
ERRORS = (ValueError, TypeError, OverflowError)
DIMS = [0, 1, 2, 3, 4, 8, 31, 32, 33, 64, 256]
DTYPES = [np.float32, np.float64, np.int8, np.uint8, np.int32, np.int64, np.float16]
GUARD = 64  # bytes on each side of an output buffer, filled with a pattern the kernels must not touch


class Guarded:
    """An array placed inside a larger byte buffer whose margins must stay untouched."""

    def __init__(self, shape, dtype, misalign: int = 0):
        dtype = np.dtype(dtype)
        n = int(np.prod(shape)) * dtype.itemsize
        self.buf = np.full(n + 2 * GUARD + misalign, 0xA5, np.uint8)
        start = GUARD + misalign
        self.array = self.buf[start : start + n].view(dtype).reshape(shape)
        self.start, self.n = start, n

    def intact(self) -> bool:
        return bool((self.buf[: self.start] == 0xA5).all() and (self.buf[self.start + self.n :] == 0xA5).all())


@st.composite
def arrays(draw, base: tuple[int, ...], dtype=np.float32, values=None):
    """Mostly arrays of the expected shape and dtype; sometimes another shape, dtype, order or
    a misaligned or strided view; values include NaN and inf."""
    shape = tuple(d if draw(st.integers(0, 5)) else draw(st.sampled_from(DIMS)) for d in base)
    if not draw(st.integers(0, 5)):
        shape = shape + (2,) if draw(st.booleans()) else shape[:-1]
    dt = np.dtype(dtype if draw(st.integers(0, 5)) else draw(st.sampled_from(DTYPES)))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if values is None:
        a = rng.standard_normal(shape).astype(dt) if dt.kind == "f" else rng.integers(-3, 3, shape).astype(dt)
        if a.size and dt.kind == "f" and not draw(st.integers(0, 3)):
            a.flat[rng.integers(0, a.size)] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    else:
        a = values(rng, shape).astype(dt)
    layout = draw(st.sampled_from(["c", "c", "c", "f", "strided", "misaligned"]))
    if layout == "f":
        a = np.asfortranarray(a)
    elif layout == "strided" and a.ndim and a.shape[-1] > 1:
        a = a[..., ::2]
    elif layout == "misaligned":
        g = Guarded(a.shape, a.dtype, misalign=1)
        g.array[...] = a
        a = g.array
    return a


def _call(fn, *args):
    try:
        return fn(*args)
    except ERRORS:
        return None


fmts = st.sampled_from([-1, 0, 1, 2, 3, 4, 5, 99])
threads = st.sampled_from([-1, 0, 1, 2])


@boundary
@given(st.data(), st.sampled_from(DIMS), st.sampled_from([32, 64, 256, 33]), fmts, threads)
def test_quantize_rows(data, R, C, fmt, nth):
    w = data.draw(arrays((R, C)))
    rb = max(0, _kernels.row_bytes(fmt, C)) if fmt in _kernels.FORMATS.values() else 8
    out = Guarded(data.draw(st.sampled_from([(R, rb), (R, rb + 1), (R + 1, rb), (max(0, R - 1), rb)])), np.uint8)
    _call(_kernels.quantize_rows, w, fmt, out.array, nth)
    assert out.intact()


@boundary
@given(st.data(), st.sampled_from(DIMS), st.sampled_from([32, 64, 256, 33, 0, -32]), fmts)
def test_dequantize_rows(data, R, cols, fmt):
    rb = _kernels.row_bytes(fmt, cols) if fmt in _kernels.FORMATS.values() else 8
    src = data.draw(arrays((R, max(0, rb)), np.uint8, values=lambda rng, s: rng.integers(0, 256, s)))
    out = Guarded(data.draw(st.sampled_from([(R, max(0, cols)), (R, max(0, cols) + 1), (R + 1, max(0, cols))])), np.float32)
    _call(_kernels.dequantize_rows, src, fmt, cols, out.array)
    assert out.intact()


@boundary
@given(st.data(), st.sampled_from([0, 1, 3, 4, 5, 8]), st.sampled_from([16, 32, 34, 36, 18, 35, 68]), fmts)
def test_repack4(data, R, nbytes, fmt):
    src = data.draw(arrays((R, nbytes), np.uint8, values=lambda rng, s: rng.integers(0, 256, s)))
    out = Guarded(data.draw(st.sampled_from([(R, nbytes), (R + 1, nbytes), (R, nbytes - 1)])), np.uint8)
    _call(_kernels.repack4, src, fmt, out.array)
    assert out.intact()


@boundary
@given(st.data(), st.sampled_from([0, 1, 3]), st.sampled_from([32, 64, 0, 33, 16]))
def test_quantize_activations(data, N, C):
    x = data.draw(arrays((N, C)))
    q = Guarded(data.draw(st.sampled_from([(N, C), (N, C + 1), (N + 1, C)])), np.int8)
    d = Guarded(data.draw(st.sampled_from([(N, C // 32), (N, C // 32 + 1), (N, max(0, C // 32 - 1))])), np.float32)
    _call(_kernels.quantize_activations, x, q.array, d.array)
    assert q.intact() and d.intact()


@boundary
@given(st.data(), st.sampled_from([0, 1, 4, 5, 17]), st.sampled_from([32, 64, 256]), st.sampled_from([1, 2]), fmts,
       threads, st.sampled_from([-1, 0, 1, 16]), st.sampled_from([0, 1, 2]))  # fmt: skip
def test_matmat(data, R, C, N, fmt, nth, chunk, interleaved):
    rb = _kernels.row_bytes(fmt, C) if fmt in _kernels.FORMATS.values() else 8
    w = data.draw(arrays((R, max(0, rb)), np.uint8, values=lambda rng, s: rng.integers(0, 256, s)))
    x = data.draw(arrays((N, C)))
    y = Guarded(data.draw(st.sampled_from([(N, R), (N, R + 1), (N + 1, R)])), np.float32)
    _call(_kernels.matmat, w, fmt, C, x, y.array, nth, chunk, interleaved)
    assert y.intact()


@boundary
@given(st.data(), st.sampled_from([0, 1, 3]), st.sampled_from([0, 1, 8, 33]),
       st.sampled_from([1e-5, 0.0, -1.0, float("nan"), float("inf")]))  # fmt: skip
def test_rmsnorm(data, N, D, eps):
    x, scale = data.draw(arrays((N, D))), data.draw(arrays((D,)))
    out = _call(_kernels.rmsnorm, x, scale, eps)
    assert out is None or out.shape == x.shape


@boundary
@given(st.data(), st.sampled_from([1, 2, 3]), st.sampled_from([0, 1, 2, 3, 4, 8]), st.sampled_from([1, 2, 4]),
       st.sampled_from([1, 4, 16]))  # fmt: skip
def test_rope(data, N, hd, heads, P):
    v = Guarded((N, heads * hd), np.float32)
    v.array[...] = 1.0
    cos, sin = data.draw(arrays((P, max(1, hd // 2)))), data.draw(arrays((P, max(1, hd // 2))))
    pos = data.draw(arrays((N,), np.int32, values=lambda rng, s: rng.integers(-2, P + 2, s)))
    _call(_kernels.rope, v.array, hd, cos, sin, pos)
    assert v.intact()


@boundary
@given(st.data(), st.sampled_from([0, 1, 3]), st.sampled_from([0, 1, 8, 33]))
def test_swiglu(data, N, F):
    g = Guarded((N, F), np.float32)
    u = data.draw(arrays((N, F)))
    _call(_kernels.swiglu, g.array, u)
    assert g.intact()


@boundary
@given(st.data(), st.sampled_from([0, 1, 2, 5]), st.sampled_from([0, 1, 8, 16]))
def test_attention(data, T, hd):
    q, k, v = data.draw(arrays((hd,))), data.draw(arrays((T, hd))), data.draw(arrays((T, hd)))
    valid = data.draw(arrays((T,), np.uint8, values=lambda rng, s: rng.integers(0, 2, s)))
    out = _call(_kernels.attention, q, k, v, valid, 0.25)
    assert out is None or out.shape == q.shape


@boundary
@given(st.data(), st.sampled_from([1, 2, 5, 64]), st.integers(-2, 70), st.sampled_from([0.0, 0.7, 1e-30, -1.0, float("nan")]),
       st.integers(-1, 80))  # fmt: skip
def test_sample_returns_a_code_below_limit(data, V, limit, temperature, topk):
    logits = data.draw(arrays((V,)))
    q = data.draw(arrays((V,), values=lambda rng, s: rng.exponential(1.0, s) + 1e-3))
    code = _call(_kernels.sample, logits, limit, temperature, topk, q)
    assert code is None or 0 <= code < limit  # NaN/inf logits never become an index outside [0, limit)


# ---- the backend ----
@pytest.fixture(scope="module")
def backend():
    from csm_core.config import CSMConfig, LlamaConfig
    from csm_core.testing.csm import random_csm_weights
    from csm_cpu.backend import CpuBackend

    flavor = LlamaConfig(num_layers=1, num_heads=2, num_kv_heads=1, embed_dim=32, intermediate_dim=32, max_seq_len=16)
    cfg = CSMConfig(backbone_flavor="micro", decoder_flavor="micro", text_vocab_size=8, audio_vocab_size=4,
                    audio_num_codebooks=2, custom_flavors={"micro": flavor})  # fmt: skip
    return CpuBackend(cfg, random_csm_weights(cfg, 0), "q8_0", threads=1)


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # fmt: skip
@given(st.data())
def test_backend_generate_frame_boundary(backend, data):
    cfg = backend.config
    K1 = cfg.audio_num_codebooks + 1
    S = data.draw(st.sampled_from([0, 1, 2, 20]))
    shape = data.draw(st.sampled_from([(1, S, K1), (1, S, K1 + 1), (2, S, K1), (S, K1)]))
    dtype = data.draw(st.sampled_from([np.int64, np.int32, np.uint64, np.float32, np.int8]))
    tokens = np.asarray(data.draw(st.lists(st.sampled_from([0, 1, 3, 7, 8, -1, 2**40]), min_size=int(np.prod(shape)),
                                           max_size=int(np.prod(shape)))), dtype=np.int64)  # fmt: skip
    tokens = tokens.astype(dtype, casting="unsafe").reshape(shape)
    mask = np.ones(shape, data.draw(st.sampled_from([np.bool_, np.bool_, np.uint8])))
    topk = data.draw(st.sampled_from([1, 3, 2**31, 2**40]))
    temperature = data.draw(st.sampled_from([0.0, 0.9, 1e-30]))
    backend.reset(1, seed=0)
    try:
        codes = backend.generate_frame(tokens, mask, SamplingParams(temperature, topk, codec_size=2))
    except ValueError:
        return
    assert codes.shape == (1, cfg.audio_num_codebooks) and ((codes >= 0) & (codes < cfg.audio_vocab_size)).all()


def test_sampling_params_refuse_an_empty_codebook():
    with pytest.raises(ValueError, match="codec_size"):
        SamplingParams(codec_size=0)


# ---- regressions: each of these crashed the process or read outside a buffer before the checks ----
def test_quantize_activations_with_short_outputs():  # was heap corruption (abort: munmap_chunk)
    with pytest.raises(ValueError, match="do not fit x"):
        _kernels.quantize_activations(np.ones((4, 64), np.float32), np.zeros((1, 4), np.int8), np.zeros((1, 1), np.float32))


def test_sample_with_limit_past_the_logits():  # was a segfault
    with pytest.raises(ValueError, match="limit 1048576 must be in"):
        _kernels.sample(np.zeros(4, np.float32), 1 << 20, 1.0, 5, np.ones(1, np.float32))


def test_matmat_with_chunk_zero():  # was SIGFPE (integer division by zero in nogil code)
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        _kernels.matmat(np.zeros((4, 34), np.uint8), _kernels.FORMATS["q8_0"], 32, np.ones((1, 32), np.float32),
                        np.zeros((1, 4), np.float32), 1, 0, 0)  # fmt: skip


def test_swiglu_and_attention_with_short_operands():  # were silent reads past the end of u / v
    with pytest.raises(ValueError, match="differ"):
        _kernels.swiglu(np.ones((1, 64), np.float32), np.ones((1, 1), np.float32))
    with pytest.raises(ValueError, match="do not fit"):
        _kernels.attention(np.ones(8, np.float32), np.ones((1000, 8), np.float32), np.ones((1, 8), np.float32),
                           np.ones(1000, np.uint8), 1.0)  # fmt: skip


def test_backend_topk_beyond_a_c_int(backend):  # was OverflowError from the engine's int argument
    backend.reset(1, seed=0)
    tokens = np.zeros((1, 1, 3), np.int64)
    mask = np.zeros((1, 1, 3), bool)
    mask[..., -1] = True
    codes = backend.generate_frame(tokens, mask, SamplingParams(0.9, 2**40))
    assert codes.shape == (1, 2) and ((codes >= 0) & (codes < 4)).all()


def test_unaligned_inputs_give_the_aligned_results():
    """No kernel needs aligned memory (every SIMD load is unaligned): a view one byte off gives
    the same numbers."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 64)).astype(np.float32)
    odd = Guarded(x.shape, np.float32, misalign=1).array
    odd[...] = x
    scale = np.ones(64, np.float32)
    np.testing.assert_array_equal(_kernels.rmsnorm(odd, scale, 1e-5), _kernels.rmsnorm(x, scale, 1e-5))
    w = rng.standard_normal((8, 64)).astype(np.float32)
    q8 = np.empty((8, _kernels.row_bytes(_kernels.FORMATS["q8_0"], 64)), np.uint8)
    _kernels.quantize_rows(w, _kernels.FORMATS["q8_0"], q8)
    y0, y1 = np.empty((3, 8), np.float32), np.empty((3, 8), np.float32)
    _kernels.matmat(q8, _kernels.FORMATS["q8_0"], 64, x, y0)
    _kernels.matmat(q8, _kernels.FORMATS["q8_0"], 64, odd, y1)
    np.testing.assert_array_equal(y0, y1)
