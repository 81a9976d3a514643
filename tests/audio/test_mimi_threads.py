"""The helper thread (threads.split_work, products with paired=True), weight layouts, and the two-stream splits
of SEANet and the streaming decoder: every threaded path equals the plain one."""

from __future__ import annotations

import contextlib
import threading

import numpy as np
import pytest

from csm_audio import Mimi
from csm_audio.mimi import activations, linalg, seanet, threads
from csm_audio.mimi.activations import elu, gelu
from csm_audio.mimi.layout import pack_weights, weight_matrix
from csm_audio.mimi.linalg import matmul
from csm_audio.mimi.threads import share_work, split_work
from csm_core.config import mimi_tiny
from csm_core.testing.mimi import mimi_test_audio, random_mimi_weights

rng = np.random.default_rng(0)


@pytest.fixture(scope="module")
def model():
    cfg = mimi_tiny()
    return Mimi(cfg, random_mimi_weights(cfg, 7))


@pytest.fixture
def pair_everything(monkeypatch):
    """Thresholds down so the tiny model's products and passes take the paired / streaming paths."""
    monkeypatch.setattr(linalg, "_PAIR_MIN_MACS", 1)
    monkeypatch.setattr(activations, "_PAIR_MIN_ELEMENTS", 1)
    monkeypatch.setattr(linalg, "_STREAM_MIN_BYTES", 1)
    monkeypatch.setattr(linalg, "_PAIR_MIN_ROWS", 10)
    monkeypatch.setattr(linalg, "_PAIR_MIN_COLS", 1)


def test_split_work_runs_both_on_two_threads():
    ran, theirs_done = {}, threading.Event()

    def mine():
        ran["mine"] = threading.get_ident()
        assert theirs_done.wait(10)  # so theirs can only have run on the helper

    def theirs():
        ran["theirs"] = threading.get_ident()
        theirs_done.set()

    split_work(mine, theirs)
    assert ran["mine"] == threading.get_ident() != ran["theirs"]


def test_split_work_raises_the_helpers_error():
    ran = threading.Event()

    def bad():
        ran.set()
        raise KeyError("from the helper")

    with pytest.raises(KeyError, match="from the helper"):
        split_work(lambda: ran.wait(10), bad)  # mine waits: bad() ran on the helper


@contextlib.contextmanager
def busy_helper():
    """The helper thread blocked on a task of ours for the duration."""
    hold, started = threading.Event(), threading.Event()

    def block():
        started.set()
        hold.wait(10)

    threads._helper().tasks.put(threads._Task(block))
    assert started.wait(10)
    try:
        yield
    finally:
        hold.set()


def test_busy_helper_work_runs_here():
    """A task the helper has not started by the time this thread is done runs on this thread."""
    with busy_helper():
        where = []
        split_work(lambda: None, lambda: where.append(threading.get_ident()))
    assert where == [threading.get_ident()]


def test_share_work_returns_results_in_order_and_raises():
    assert share_work([lambda i=i: i * i for i in range(7)]) == [i * i for i in range(7)]

    def bad():
        raise RuntimeError("piece failed")

    with pytest.raises(RuntimeError, match="piece failed"):
        share_work([lambda: 1, bad])


def test_share_work_with_a_busy_helper_runs_every_piece_here():
    with busy_helper():
        where = share_work([threading.get_ident for _ in range(4)])
    assert where == [threading.get_ident()] * 4


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 16])
@pytest.mark.parametrize("tall", [False, True])
@pytest.mark.parametrize("paired", [False, True])
def test_matmul_paths_equal_numpy(pair_everything, rows, tall, paired):
    k, n = (700, 300) if tall else (300, 700)
    w = weight_matrix(rng.normal(0, 1, (k, n)).astype(np.float32))
    assert w.flags.f_contiguous == tall  # tall weights stored transposed
    x = rng.normal(0, 1, (rows, k)).astype(np.float32)
    y = matmul(x, w, paired)
    np.testing.assert_allclose(y, x.astype(np.float64) @ w, rtol=1e-5, atol=2e-4)


def test_paired_elementwise_equals_plain(pair_everything):
    x = rng.normal(0, 3, (37, 50)).astype(np.float32)
    e, g = elu(x, True), gelu(x, True)
    np.testing.assert_array_equal(e, elu(x))
    np.testing.assert_array_equal(g, gelu(x))


def _root(a: np.ndarray) -> np.ndarray:
    while a.base is not None:
        a = a.base
    return a


def test_pack_weights_keeps_values_and_order():
    a = weight_matrix(rng.normal(0, 1, (30, 7)).astype(np.float32))  # tall: F order
    b = weight_matrix(rng.normal(0, 1, (7, 30)).astype(np.float32))
    pa, pb = pack_weights([a, b])
    np.testing.assert_array_equal(pa, a)
    np.testing.assert_array_equal(pb, b)
    assert pa.flags.f_contiguous and pb.flags.c_contiguous
    assert _root(pa) is _root(pb)  # one buffer
    with pytest.raises(ValueError, match="contiguous"):
        pack_weights([np.zeros((4, 4), np.float32)[:, ::2]])


@pytest.fixture
def count_splits(monkeypatch):
    calls = []

    def counting(pieces):
        calls.append(len(pieces))
        return share_work(pieces)

    monkeypatch.setattr(seanet, "share_work", counting)
    return calls


@pytest.mark.parametrize("length", [96_000, 100_007])
def test_encoder_split_in_two_streams_equals_one(model, count_splits, length):
    x = mimi_test_audio(length, seed=2)[:, None]
    one = model.encoder.forward(x, split=False)
    assert not count_splits
    two = model.encoder.forward(x, split=True)
    assert count_splits == [2]  # the clip really was split
    assert two.shape == one.shape
    assert np.abs(two - one).max() <= 1e-5 * np.abs(one).max()


# one frame and 4 frames split the SEANet tail (96, 384 steps), longer chunks all of it
@pytest.mark.parametrize("steps,pieces", [(2, 2), (8, 4), (130, 2), (2100, 4)])
def test_decoder_split_in_two_streams_equals_one(model, count_splits, steps, pieces):
    d = model.decoder
    x = rng.normal(0, 1, (steps + 10, model.config.dimension)).astype(np.float32)
    _, state = d.step(x[:10], d.init_state())  # a state that is not zero
    one, s1 = d.step(x[10:], state, split=False)
    assert not count_splits
    two, s2 = d.step(x[10:], state, split=True)
    assert count_splits == [pieces]
    assert np.abs(two - one).max() <= 1e-5 * np.abs(one).max()
    # the states carried on are equivalent: the next chunk decodes the same
    nxt = rng.normal(0, 1, (3, model.config.dimension)).astype(np.float32)
    np.testing.assert_allclose(d.step(nxt, s2)[0], d.step(nxt, s1)[0], atol=1e-5 * np.abs(one).max(), rtol=0)


@pytest.mark.parametrize("paired", [False, True, None])
def test_streaming_decoder_modes_equal_whole_clip(model, pair_everything, paired):
    codes = np.random.default_rng(3).integers(0, 2048, (32, 30))
    whole = model.decode(codes)
    dec = model.streaming_decoder(paired)
    out = np.concatenate([dec.decode(codes[:, t : t + 1]) for t in range(codes.shape[1])])
    assert np.abs(out - whole).max() <= 1e-5


def test_adaptive_decoder_takes_the_faster_mode_and_keeps_probing(model, monkeypatch):
    monkeypatch.setenv("CSM_AUDIO_PAIR", "0")
    assert model.streaming_decoder()._use_helper() is False
    monkeypatch.setenv("CSM_AUDIO_PAIR", "1")
    dec = model.streaming_decoder()
    assert not dec._adaptive and all(dec._use_helper() for _ in range(20))
    monkeypatch.delenv("CSM_AUDIO_PAIR")
    monkeypatch.setattr(threads, "pair_default", lambda: True)
    monkeypatch.setattr("csm_audio.mimi.model.pair_default", lambda: True)
    dec = model.streaming_decoder()
    assert dec._adaptive
    first = [dec._use_helper() for _ in range(2)]
    assert sorted(first) == [False, True]  # both timed at the start
    dec._cost = {True: 0.010, False: 0.020}
    picks = [dec._use_helper() for _ in range(16)]
    assert picks.count(True) == 14 and picks.count(False) == 2  # every 8th call probes the other
    assert model.streaming_decoder(False)._use_helper() is False
    assert model.streaming_decoder(True)._use_helper() is True


def test_transformer_chunks_across_the_key_buffer(model):
    """Keys/values live in buffers of 2·context steps, shifted when full; chunks of any size, also
    larger than the buffer, give the whole-sequence result."""
    tr = model.decoder_transformer
    x = rng.normal(0, 1, (1400, model.config.dimension)).astype(np.float32)
    whole = tr.forward(x)
    state, parts, a = tr.init_state(), [], 0
    for n in [1, 2, 3, 490, 2, 2, 600, 1, 299]:
        y, state = tr.step(x[a : a + n], state)
        parts.append(y)
        a += n
    assert a == 1400 and state.offset == 1400
    np.testing.assert_allclose(np.concatenate(parts), whole, atol=1e-5, rtol=0)
