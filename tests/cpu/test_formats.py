"""csm_cpu.formats, the one Python table of weight formats: it agrees with the C table
(include/csm_formats.h), a drift fails at import, and every Python site reads it."""

from __future__ import annotations

import numpy as np
import pytest

from csm_cpu import _kernels, formats, gguf_io, quant, twins
from csm_cpu.backend import CpuBackend


def test_python_table_is_the_c_table():
    c = _kernels.format_table()
    assert list(c) == list(formats.FORMATS)
    for name, f in formats.FORMATS.items():
        code, block, block_bytes, int8, unit = c[name]
        assert (f.code, f.block, f.block_bytes, bool(int8), f.repack_unit) == (code, block, block_bytes, f.int8_activations, unit)
        for cols in (f.block * 8, f.block * 24):
            assert f.row_bytes(cols) == _kernels.row_bytes(code, cols)


def test_a_drift_from_the_c_table_fails_at_import(monkeypatch):
    table = _kernels.format_table()
    monkeypatch.setattr(_kernels, "format_table", lambda: {**table, "q5_0": (5, 32, 22, 1, 0)})
    with pytest.raises(ImportError, match="the C table has"):
        formats._check_against_c()
    code, block, _, int8, unit = table["q4_0"]
    monkeypatch.setattr(_kernels, "format_table", lambda: {**table, "q4_0": (code, block, 20, int8, unit)})
    with pytest.raises(ImportError, match="format q4_0: C layout"):
        formats._check_against_c()


def test_every_site_reads_the_table():
    assert CpuBackend.quants == tuple(formats.FORMATS)
    assert set(gguf_io._ggml_types()) == set(formats.FORMATS)
    assert {f.name for f in formats.FORMATS.values() if f.int8_activations} == {"q8_0", "q4_0", "q4_k"}
    with pytest.raises(ValueError, match=r"unsupported quantization 'q5_0'; supported: f32, bf16, q8_0, q4_0, q4_k"):
        quant.check_format("q5_0")
    q4k = formats.get("q4_k")
    assert q4k.matrix_format(256 * 3).name == "q4_k" and q4k.matrix_format(96).name == "q8_0"
    with pytest.raises(ValueError, match="q4_k needs rows of a multiple of 256 values, got 96"):
        quant.quantize(np.ones((2, 96), np.float32), "q4_k")


@pytest.mark.parametrize("name", list(formats.FORMATS))
def test_kernel_storage_matches_the_twin(name):
    """Stored rows expand (C) to what the numpy twin expands them to, and quantize alike (q4_k:
    gguf-py has no Q4_K quantizer, its dequantizer is the twin)."""
    pytest.importorskip("gguf")
    f = formats.get(name)
    w = np.random.default_rng(1).standard_normal((5, f.block * 8 if f.block > 1 else 40)).astype(np.float32)
    q = quant.quantize(w, name)
    assert q.data.shape == (5, f.row_bytes(w.shape[1]))
    np.testing.assert_array_equal(q.dequantize(), twins.dequantize(q.data, name, w.shape[1]))
    if name != "q4_k":
        np.testing.assert_array_equal(q.data, twins.quantize(w, name).reshape(q.data.shape))
    assert twins.matmat(q.data, name, w.shape[1], np.ones((1, w.shape[1]), np.float32)).shape == (1, 5)
