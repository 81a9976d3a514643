"""Batched streaming decode (Mimi.batch_streaming_decoder): rows with any histories advance
together and each row's audio is its own single-stream decode of the same calls.

Bit for bit where the products are: with a product whose rows do not depend on each other, the
batched decode equals the single streams exactly (state handling, attention, elementwise passes).
With BLAS, OpenBLAS sgemm rounds a row differently depending on how many rows the call holds, so
there it is equal to float32 rounding (the single stream's own 1- vs 3-frame chunking differs by
as much)."""

from __future__ import annotations

import numpy as np
import pytest

from csm_audio import Mimi
from csm_audio.mimi import conv, quantizer, transformer
from csm_core.config import mimi, mimi_tiny
from csm_core.protocols import BatchStreamingDecoder
from csm_core.testing.mimi import random_mimi_weights

TOL = 4e-6  # float32 rounding of the products, amplified by the random-weight decoder (peak |audio| ~2)


@pytest.fixture(scope="module")
def model():
    cfg = mimi_tiny()
    return Mimi(cfg, random_mimi_weights(cfg, 5))


@pytest.fixture
def row_products(monkeypatch):
    """Every weight product row by row: each row's result no longer depends on the others."""

    def rowwise(x, w, paired=False):  # the same sequence of multiply-adds for every row, whatever the row count
        y = np.zeros((x.shape[0], w.shape[1]), np.float32)
        for k in range(w.shape[0]):
            y += x[:, k : k + 1] * w[k]
        return y

    for module in (conv, transformer, quantizer):  # every module that calls linalg.matmul
        monkeypatch.setattr(module, "matmul", rowwise)


def _interleave(model, rows: int, steps: int, seed: int, codebooks: int = 32):
    """Random calls: rows join (reset) at random times, each call decodes a random subset of rows
    (in random order) for a random number of frames. Yields (batched audio, per-row references)."""
    rng = np.random.default_rng(seed)
    batch = model.batch_streaming_decoder(rows)
    singles = [model.streaming_decoder(False) for _ in range(rows)]
    for _ in range(steps):
        if rng.random() < 0.15:
            r = int(rng.integers(rows))
            batch.reset_row(r)
            singles[r].reset()
        n = int(rng.integers(1, rows + 1))
        chosen = [int(r) for r in rng.permutation(rows)[:n]]
        f = int(rng.choice([1, 1, 1, 2, 3, 5]))
        codes = rng.integers(0, 2048, (n, codebooks, f))
        out = batch.decode(chosen, codes)
        assert out.shape == (n, f * 1920) and out.dtype == np.float32
        refs = np.stack([singles[r].decode(codes[i]) for i, r in enumerate(chosen)])
        yield out, refs
    for r in range(rows):
        assert batch.frames(r) == singles[r].frames


def test_implements_protocol(model):
    dec = model.batch_streaming_decoder(3)
    assert isinstance(dec, BatchStreamingDecoder)
    assert dec.rows == 3 and [dec.frames(r) for r in range(3)] == [0, 0, 0]


def test_bit_exact_with_row_independent_products(model, row_products):
    for out, refs in _interleave(model, rows=5, steps=40, seed=1):
        np.testing.assert_array_equal(out, refs)


def test_one_row_is_bit_exact(model):
    # a call with one row runs the single stream's products on the same matrices
    batch, single = model.batch_streaming_decoder(4), model.streaming_decoder(False)
    codes = np.random.default_rng(2).integers(0, 2048, (9, 32, 3))
    for t, f in enumerate([1, 2, 3, 1, 3, 1, 2, 1, 1]):
        np.testing.assert_array_equal(batch.decode([2], codes[t : t + 1, :, :f]), single.decode(codes[t, :, :f])[None])


@pytest.mark.parametrize("seed", [3, 4])
def test_random_interleavings_match_single_streams(model, seed):
    worst = 0.0
    for out, refs in _interleave(model, rows=6, steps=50, seed=seed):
        worst = max(worst, float(np.abs(out - refs).max()))
    assert worst <= TOL


def test_long_and_fresh_rows_together(model):
    # one row past the 250-step attention window (buffers moved), one just reset, in one call
    rng = np.random.default_rng(5)
    batch = model.batch_streaming_decoder(2)
    old, new = model.streaming_decoder(False), model.streaming_decoder(False)
    history = rng.integers(0, 2048, (32, 140))  # 280 transformer steps
    for a in range(0, 140, 7):
        batch.decode([0], history[None, :, a : a + 7])
        old.decode(history[:, a : a + 7])
    batch.reset_row(1)
    for t in range(6):
        codes = rng.integers(0, 2048, (2, 32, 1 + t % 2))
        out = batch.decode([1, 0], codes)
        np.testing.assert_allclose(out[0], new.decode(codes[0]), atol=TOL, rtol=0)
        np.testing.assert_allclose(out[1], old.decode(codes[1]), atol=TOL, rtol=0)
    assert (batch.frames(0), batch.frames(1)) == (old.frames, new.frames) == (149, 9)


def test_fewer_codebooks_and_empty_calls(model):
    batch, single = model.batch_streaming_decoder(3), model.streaming_decoder(False)
    codes = np.random.default_rng(6).integers(0, 2048, (1, 8, 2))
    assert batch.decode([0], codes[:, :, :0]).shape == (1, 0)
    assert batch.decode([], np.zeros((0, 8, 2), np.int64)).shape == (0, 3840)
    np.testing.assert_allclose(batch.decode([1], codes)[0], single.decode(codes[0]), atol=TOL, rtol=0)
    assert batch.frames(0) == 0 and batch.frames(1) == 2


def test_reset_row_leaves_the_others(model):
    rng = np.random.default_rng(7)
    batch = model.batch_streaming_decoder(3)
    singles = [model.streaming_decoder(False) for _ in range(3)]
    for _ in range(3):
        codes = rng.integers(0, 2048, (3, 32, 1))
        batch.decode([0, 1, 2], codes)
        for r in range(3):
            singles[r].decode(codes[r])
    batch.reset_row(1)
    singles[1].reset()
    codes = rng.integers(0, 2048, (3, 32, 2))
    out = batch.decode([2, 1, 0], codes)
    for i, r in enumerate([2, 1, 0]):
        np.testing.assert_allclose(out[i], singles[r].decode(codes[i]), atol=TOL, rtol=0)


@pytest.mark.parametrize(
    "rows, codes, error, match",
    [
        ([3], np.zeros((1, 32, 1), np.int64), IndexError, r"row 3 is out of range: this decoder holds rows 0 to 2"),
        ([-1], np.zeros((1, 32, 1), np.int64), IndexError, r"row -1 is out of range"),
        ([1, 1], np.zeros((2, 32, 1), np.int64), ValueError, r"row 1 is listed 2 times"),
        ([0, 1], np.zeros((1, 32, 1), np.int64), ValueError, r"codes hold 1 rows .* for 2 listed rows"),
        ([0], np.zeros((32, 1), np.int64), ValueError, r"3-D array \[rows, num_codebooks, frames\], got shape \(32, 1"),
        ([0], np.zeros((1, 33, 1), np.int64), ValueError, r"33 codebooks .* expected 1 to 32"),
        ([0], np.zeros((1, 32, 1), np.float32), ValueError, r"codes must be integers, got dtype float32"),
        ([0, 2], np.full((2, 32, 1), 7), ValueError, r"code 2048 for row 2 \(codes\[1\]\), codebook 4, frame 0"),
        ([0.5], np.zeros((1, 32, 1), np.int64), TypeError, r"a row must be an integer, got 0.5"),
        (1, np.zeros((1, 32, 1), np.int64), TypeError, r"rows must be a sequence of row numbers"),
    ],
)
def test_bad_input(model, rows, codes, error, match):
    batch = model.batch_streaming_decoder(3)
    if "2048" in match:
        codes[1, 4, 0] = 2048
    with pytest.raises(error, match=match):
        batch.decode(rows, codes)
    assert [batch.frames(r) for r in range(3)] == [0, 0, 0]  # nothing advanced


def test_bad_rows_and_reset(model):
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="rows must be an integer >= 1"):
            model.batch_streaming_decoder(bad)
    with pytest.raises(IndexError, match="row 4 is out of range"):
        model.batch_streaming_decoder(2).reset_row(4)


@pytest.mark.slow
def test_full_size_rows_match_single_streams():
    cfg = mimi()
    m = Mimi(cfg, random_mimi_weights(cfg, 2))
    worst = 0.0
    for out, refs in _interleave(m, rows=3, steps=8, seed=8):
        worst = max(worst, float(np.abs(out - refs).max()))
    assert worst <= TOL


def test_scheduler_audio_equals_per_row_decoders(model):
    # csm_core's Scheduler decodes every slot through this decoder; without it, one streaming
    # decoder per slot. Requests of different lengths join and leave: same audio per request.
    from csm_core.config import csm_tiny
    from csm_core.options import GenerationOptions
    from csm_core.scheduler import Scheduler
    from csm_core.slots import FrameModelSlots
    from csm_core.testing.generation import FakeFrameModel, FakeTokenizer

    class PerRowOnly:  # the codec without batch_streaming_decoder: the scheduler's fallback
        def __init__(self, codec):
            self._codec = codec
            for name in ("sample_rate", "frame_size", "num_codebooks", "codebook_size", "encode", "decode"):
                setattr(self, name, getattr(codec, name))

        def streaming_decoder(self):
            return self._codec.streaming_decoder(False)

    def run(codec):
        slots = FrameModelSlots(lambda: FakeFrameModel(csm_tiny()))
        sched = Scheduler(slots, FakeTokenizer(), codec, slots=2, chunk_frames=2)
        lengths_ms = [240, 720, 400, 560]  # 3, 9, 5, 7 frames: rows join and leave at different steps
        jobs = [
            sched.submit(f"Request {i}.", options=GenerationOptions(seed=i, max_audio_ms=ms))
            for i, ms in enumerate(lengths_ms)
        ]
        return [sched.result(j).audio for j in jobs]

    batched = run(model)
    per_row = run(PerRowOnly(model))
    assert [a.size for a in batched] == [a.size for a in per_row] == [1920 * n for n in (3, 9, 5, 7)]
    for a, b in zip(batched, per_row):
        np.testing.assert_allclose(a, b, atol=TOL, rtol=0)
