"""Matrix-vector kernels against their numpy twins, over random shapes, every format and path."""

import numpy as np
import pytest

from csm_cpu import formats, quant, twins

FORMATS = list(formats.FORMATS)
BLOCK_FORMATS = tuple(f.name for f in formats.FORMATS.values() if f.block > 1)


def _shapes(fmt, rng):
    """Random odd shapes: row counts off every chunk size; column tails for the fp formats."""
    k = formats.get(fmt).block
    # q4_k (256-value super-blocks) also gets one row as long as CSM-1B's widest (8192 values)
    out = [(1, 32 * k if k > 32 else 32), (3, 2 * max(k, 32)), (17, 3 * max(k, 32))]
    for _ in range(3):
        rows = int(rng.integers(1, 80))
        cols = int(rng.integers(1, 12)) * k if k > 1 else int(rng.integers(1, 300))
        out.append((rows, cols))
    return out


@pytest.mark.parametrize("fmt", ["f32", "bf16", "q8_0", "q4_0"])
def test_quantize_matches_twin(fmt):
    rng = np.random.default_rng(1)
    w = (rng.standard_normal((37, 160)) * rng.uniform(0.01, 3, (37, 1))).astype(np.float32)
    w[3, :32] = 0.0  # an all-zero block
    got = quant.quantize(w, fmt)
    np.testing.assert_array_equal(got.data, twins.quantize(w, fmt).reshape(got.data.shape))
    np.testing.assert_array_equal(got.dequantize(), twins.dequantize(got.data, fmt, 160))


def test_activation_quantization_matches_twin():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 256)).astype(np.float32)
    x[1, 32:64] = 0.0
    q, d = quant.quantize_activations(x)
    tq, td = twins.quantize_activations(x)
    np.testing.assert_array_equal(q, tq)
    np.testing.assert_array_equal(d, td)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("nvec", [1, 3])
@pytest.mark.parametrize("fmt", FORMATS)
def test_matmat_matches_twin(fmt, nvec, threads, isa):
    rng = np.random.default_rng(hash((fmt, nvec, threads)) % 2**32)
    for rows, cols in _shapes(fmt, rng):
        w = rng.standard_normal((rows, cols)).astype(np.float32)
        x = rng.standard_normal((nvec, cols)).astype(np.float32)
        qw = quant.quantize(w, fmt)
        if isa != "portable":  # the layout these paths run in the model
            qw = qw.repack4()
        got = quant.matmat(qw, x, threads=threads)
        want = twins.matmat(quant.quantize(w, fmt).data, fmt, cols, x)
        # Same stored values on both sides: only the summation order differs.
        scale = np.abs(twins.dequantize(quant.quantize(w, fmt).data, fmt, cols)) @ np.abs(x).T
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * scale.T.max() + 1e-30)


@pytest.mark.parametrize("repack", [False, True])
@pytest.mark.parametrize("fmt", FORMATS)
def test_several_vectors_equal_one_at_a_time(fmt, repack, isa):
    """Prefill and batches run several vectors per pass over the weights (pair kernels); each
    vector's products must be bit-identical to its own single-vector product (decode), which is
    what makes prompt-prefix reuse exact. Odd column counts reach the fp32 scalar tails."""
    if repack and isa == "portable":
        pytest.skip("the repacked layout is read by the avx2 and avx512 paths only")
    rng = np.random.default_rng(5)
    cols_list = (256, 512) if fmt == "q4_k" else (96, 256) if fmt in BLOCK_FORMATS else (8, 104, 203)
    for rows in (4, 9, 66):
        for cols in cols_list:
            q = quant.quantize(rng.standard_normal((rows, cols)).astype(np.float32), fmt)
            q = q.repack4() if repack else q
            x = rng.standard_normal((5, cols)).astype(np.float32)
            together = quant.matmat(q, x, threads=2)
            for n in range(5):
                np.testing.assert_array_equal(together[n], quant.matmat(q, x[n : n + 1])[0])


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0"])
def test_prefill_tiles_match_twin_decode_and_legacy(fmt):
    """The prefill kernels of the repacked layout (Q4_0: 4 vectors a pass, Q8_0: 2 a pass with
    the scale table) against the numpy twin, against each vector's own single-vector product
    (decode) bit for bit, and against the kernels from before the prefill rework (legacy=True)
    bit for bit; vector counts with every remainder of 4, rows with a tail past the 4-row groups."""
    import csm_cpu

    if csm_cpu.cpu_features()["active"] != "avx2":
        pytest.skip("the repacked layout is read by the avx2 path only")
    rng = np.random.default_rng(11)
    for rows, cols in ((4, 64), (10, 320), (66, 2048)):
        w = (rng.standard_normal((rows, cols)) * rng.uniform(0.01, 2, (rows, 1))).astype(np.float32)
        q = quant.quantize(w, fmt)
        qr = q.repack4()
        for nvec in (4, 5, 6, 7, 9, 16):
            x = rng.standard_normal((nvec, cols)).astype(np.float32)
            x[0, :32] = 0.0  # an all-zero activation block
            got = quant.matmat(qr, x, threads=2)
            want = twins.matmat(q.data, fmt, cols, x)
            scale = np.abs(twins.dequantize(q.data, fmt, cols)) @ np.abs(x).T
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * scale.T.max() + 1e-30)
            np.testing.assert_array_equal(got, quant.matmat(qr, x, threads=1, legacy=True))
            for n in range(nvec):
                np.testing.assert_array_equal(got[n], quant.matmat(qr, x[n : n + 1])[0])


@pytest.mark.parametrize("fmt", FORMATS)
def test_matmat_within_format_error_bound(fmt):
    """Against the exact fp32 product: each format stays inside its rounding bound."""
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((64, 512)) * 0.02).astype(np.float32)
    x = rng.standard_normal((2, 512)).astype(np.float32)
    exact = x.astype(np.float64) @ w.T.astype(np.float64)
    got = quant.matmat(quant.quantize(w, fmt), x)
    aw, ax = np.abs(w), np.abs(x)
    if fmt == "f32":
        bound = 1e-5 * (ax @ aw.T)
    elif fmt == "bf16":
        bound = 2.0**-8 * (ax @ aw.T) + 1e-6
    elif fmt == "q4_k":
        xb = np.abs(x).reshape(2, -1, 32).max(-1)
        ew = np.repeat(_q4k_error_bound(w), 32, axis=1)
        ex = np.repeat(xb / 254, 32, axis=1)
        bound = ax @ ew.T + ex @ aw.T + ex @ ew.T
    else:
        # per-element steps: weights d_w (q4_0: a full step at the clipped end, q8_0: half);
        # activations d_x/2; plus fp16 rounding of the weight scale (2^-11 relative).
        wb = np.abs(w).reshape(64, -1, 32).max(-1)
        xb = np.abs(x).reshape(2, -1, 32).max(-1)
        ew = np.repeat(wb / (8 if fmt == "q4_0" else 254), 32, axis=1) + aw * 2.0**-10
        ex = np.repeat(xb / 254, 32, axis=1)
        bound = ax @ ew.T + ex @ aw.T + ex @ ew.T
    assert np.all(np.abs(got - exact) <= bound), np.max(np.abs(got - exact) / bound)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="unsupported quantization 'q3_k'"):
        quant.quantize(np.zeros((2, 32), np.float32), "q3_k")
    with pytest.raises(ValueError, match="multiple of 32"):
        quant.quantize(np.zeros((2, 33), np.float32), "q8_0")
    with pytest.raises(ValueError, match="do not fit"):
        quant.matmat(quant.quantize(np.zeros((2, 32), np.float32), "f32"), np.zeros((1, 31)))


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0", "bf16"])
def test_row_interleaved_repack_gives_identical_products(fmt, isa):
    if isa == "portable":
        pytest.skip("the repacked layout is read by the avx2 and avx512 paths only")
    rng = np.random.default_rng(4)
    for rows in (1, 4, 7, 66):
        for nvec in (1, 2, 3):  # one vector (decode kernels) and pairs (prefill kernels) + a remainder
            w = rng.standard_normal((rows, 96)).astype(np.float32)
            x = rng.standard_normal((nvec, 96)).astype(np.float32)
            q = quant.quantize(w, fmt)
            assert q.repack4().interleaved
            np.testing.assert_array_equal(quant.matmat(q.repack4(), x, threads=2), quant.matmat(q, x))
    assert not quant.quantize(np.ones((4, 36), np.float32), "bf16").repack4().interleaved  # 36 % 8: kept plain


def _q4k_error_bound(w):
    """Per (row, 32-value sub-block): what one stored Q4_K value may differ from w by: one step
    of the sub-block's own range, plus the 6-bit rounding of its scale (up to d/2 over 15 steps)
    and of its min (dmin/2), with d and dmin taken as stored."""
    rows = w.shape[0]
    q = quant.quantize(w, "q4_k").data.reshape(rows, -1, 144)
    d = np.repeat(q[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32), 8, axis=1)
    dmin = np.repeat(q[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32), 8, axis=1)
    b = w.reshape(rows, -1, 32)
    step = (np.maximum(b.max(-1), 0) - np.minimum(b.min(-1), 0)) / 15
    return step + 8 * d + dmin


def test_q4_k_blocks_read_as_gguf_reads_them():
    """Our Q4_K bytes are GGML's layout: gguf-py's dequantizer (an independent reader) gives
    exactly our values, over sub-blocks that are all zero, constant, all positive (the min then
    covers 0), of tiny and huge scale side by side; every value within its error bound."""
    from gguf import GGMLQuantizationType, quants

    rng = np.random.default_rng(7)
    w = rng.standard_normal((6, 1024)).astype(np.float32)
    w *= np.repeat(rng.uniform(1e-4, 30, (6, 32)), 32, axis=1).astype(np.float32)
    w[0, :32] = 0.0
    w[1, 32:64] = 0.75
    w[2, 64:96] = np.abs(w[2, 64:96]) + 1.0
    w[3, :256] = 0.0  # a whole zero super-block
    q = quant.quantize(w, "q4_k")
    assert q.data.shape == (6, 4 * 144)
    ours = q.dequantize()
    np.testing.assert_array_equal(ours, quants.dequantize(q.data, GGMLQuantizationType.Q4_K).reshape(w.shape))
    assert np.all(ours[3, :256] == 0) and np.all(ours[0, :32] == 0)
    err = np.abs(ours - w).reshape(6, -1, 32).max(-1)
    assert np.all(err <= _q4k_error_bound(w) * 1.001 + 1e-30)


def test_q4_k_is_closer_than_q4_0_at_the_same_size():
    """Same 4.5 bits per weight; the sub-block mins and fitted scales lower the error (measured
    relative RMS, seed 0: Gaussian 0.072 vs 0.086, Laplace 0.084 vs 0.107, skewed 0.059 vs 0.106)."""
    assert formats.get("q4_k").bytes_per_weight == formats.get("q4_0").bytes_per_weight
    rng = np.random.default_rng(0)
    for w in (rng.standard_normal((64, 2048)), rng.laplace(size=(64, 2048)), rng.gamma(2.0, size=(64, 2048)) - 1):
        w = w.astype(np.float32)
        rel = {}
        for f in ("q4_0", "q4_k"):
            rel[f] = np.sqrt(np.mean((quant.quantize(w, f).dequantize() - w) ** 2) / np.mean(w**2))
        assert rel["q4_k"] < 0.9 * rel["q4_0"], rel


def test_q4_k_row_length_errors():
    with pytest.raises(ValueError, match="q4_k needs rows of a multiple of 256 values, got 96"):
        quant.quantize(np.zeros((2, 96), np.float32), "q4_k", name="w")
    with pytest.raises(ValueError, match="multiple of 256"):
        quant.QTensor.from_bytes("q4_k", 2, 100, np.zeros(288, np.uint8))


@pytest.mark.parametrize("fmt", FORMATS)
def test_avx512_products_are_bit_identical_to_avx2(fmt):
    """The avx512 kernels keep avx2's int32 lanes and fp32 operation order, so every product
    (one vector or pairs, repacked or plain, full 4-row groups and tail rows, several chunks)
    is the same bit for bit: the paths can share rows, caches and prompt prefixes."""
    from csm_cpu.features import isa_override, supported_isas

    if "avx512" not in supported_isas():
        pytest.skip(f"avx512 not runnable here (supported: {supported_isas()})")
    rng = np.random.default_rng(8)
    cols_list = (256, 2048, 8192) if fmt == "q4_k" else (96, 2048, 8192) if fmt in BLOCK_FORMATS else (8, 104, 2048)
    for rows in (4, 7, 66):
        for cols in cols_list:
            q = quant.quantize((rng.standard_normal((rows, cols)) * 0.05).astype(np.float32), fmt)
            x = rng.standard_normal((3, cols)).astype(np.float32)
            for layout in [q, q.repack4()]:
                for nvec in (1, 2, 3):
                    got = {}
                    for name in ("avx2", "avx512"):
                        with isa_override(name):
                            got[name] = quant.matmat(layout, x[:nvec], threads=2)
                    np.testing.assert_array_equal(got["avx512"], got["avx2"], err_msg=f"{fmt} {rows}x{cols} nvec {nvec}")
