"""csm_cpu.mimi.cost: the FLOPs it counts per layer are the multiply-adds the kernels run (traced
on a real decode and encode), and the FMA probe measures something."""

from __future__ import annotations

import numpy as np
import pytest

from csm_core.config import mimi_tiny
from csm_core.testing.mimi import mimi_test_audio, random_mimi_weights
from csm_cpu import _mimi
from csm_cpu.mimi import Mimi, cost, layers


@pytest.fixture(scope="module")
def tiny():
    cfg = mimi_tiny()
    return Mimi(cfg, random_mimi_weights(cfg, 3), threads=1)


def _traced_gemm_flops(monkeypatch, fn) -> float:
    seen = []
    real = _mimi.gemm

    def record(mat, a, lda, rows, out, *rest):
        seen.append(2.0 * rows * mat.K * mat.N)
        return real(mat, a, lda, rows, out, *rest)

    monkeypatch.setattr(layers._mimi, "gemm", record)
    fn()
    monkeypatch.setattr(layers._mimi, "gemm", real)
    return sum(seen)


def _products(costs) -> float:
    return sum(c.flops for c in costs if "attention" not in c.name and "upsample" not in c.name)


def test_decode_products_are_the_traced_ones(tiny, monkeypatch):
    frames = 50  # 4 s: the head's pieces and the tail's tiles split it several times
    codes = np.random.default_rng(0).integers(0, 2048, (32, frames))
    traced = _traced_gemm_flops(monkeypatch, lambda: tiny.decode(codes))
    seconds = frames * tiny.frame_size / tiny.sample_rate
    assert traced == pytest.approx(_products(cost.decode_cost(tiny, seconds)) * seconds, rel=1e-12)


def test_encode_products_are_the_traced_ones(tiny, monkeypatch):
    seconds = 4.0
    audio = mimi_test_audio(int(seconds * tiny.sample_rate), seed=2)
    traced = _traced_gemm_flops(monkeypatch, lambda: tiny.encode(audio))
    assert traced == pytest.approx(_products(cost.encode_cost(tiny, seconds)) * seconds, rel=1e-12)


def test_attention_and_frame_counts(tiny):
    tr, d, ctx = tiny.decoder_transformer, tiny.config.dimension, tiny.config.context
    rate = 25.0
    short = [c for c in cost.decode_cost(tiny, 2.0) if c.name.endswith("attention")]
    # 50 queries, each sees all earlier keys and itself: 50·51/2 pairs of 4·d FLOPs, per 2 s
    assert short[0].flops == pytest.approx(4 * d * 50 * 51 / 2 / 2.0)
    assert len(short) == len(tr.layers)
    frame = {c.name: c for c in cost.frame_cost(tiny)}
    # a streamed frame at the steady state: 2 queries, each over a full context
    assert frame["decoder_transformer.0.attention"].flops == pytest.approx(4 * d * ctx * 2)
    flops, nbytes = cost.total(cost.frame_cost(tiny))
    assert nbytes == sum(c.weight_bytes for c in frame.values()) > 0
    assert flops == pytest.approx(cost.total(cost.decode_cost(tiny, None))[0] / 12.5)
    assert rate == 2 * tiny.sample_rate / tiny.frame_size


def test_fma_peak_measures_and_checks():
    assert _mimi.fma_peak(1, 5) > 1e8  # any CPU this runs on does more than 0.1 GFLOP/s
    with pytest.raises(ValueError, match="threads"):
        _mimi.fma_peak(0)
    with pytest.raises(ValueError, match="rounds"):
        _mimi.fma_peak(1, 0)


def test_codec_and_cost_import_without_soundfile():
    """The 16-core host has no soundfile: csm_cpu.mimi (and what the bench needs of it) must not import it."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['soundfile'] = None\n"  # any `import soundfile` now raises ImportError
            "from csm_cpu.mimi import Mimi, cost\n"
            "from csm_core.testing.mimi import random_mimi_weights, mimi_test_audio\n"
            "assert 'csm_audio' not in sys.modules\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
