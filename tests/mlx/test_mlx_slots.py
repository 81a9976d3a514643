"""MlxBackend as a SlotModel (continuous batching), tiny config, fp32 on mlx[cpu].

Every slot's codes must equal what its request gives alone: greedy against FrameModelSlots over the
numpy reference, greedy and seeded sampling against MlxBackend's FrameModel path (reset(1, seed)),
for requests admitted at different steps, with different prompt lengths, chunking, options, seeds.
"""

import os
from dataclasses import dataclass, field

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core")

from csm_core.config import csm_tiny  # noqa: E402
from csm_core.protocols import SamplingParams, SlotFeed, SlotModel  # noqa: E402
from csm_core.reference import CSMReference  # noqa: E402
from csm_core.slots import FrameModelSlots  # noqa: E402
from csm_core.testing.csm import frame_row, make_prompt, random_csm_weights  # noqa: E402
from csm_mlx.backend import MlxBackend  # noqa: E402

GREEDY = SamplingParams(temperature=0)
HOT = SamplingParams(temperature=0.9, topk=50)


@pytest.fixture(scope="module")
def tiny():
    cfg = csm_tiny()
    w = random_csm_weights(cfg, 0)
    return cfg, w, MlxBackend(cfg, w)


def prompt(cfg, seed, context=((4, 3),), text=5):
    t, m = make_prompt(cfg, np.random.default_rng(seed), context, text)
    return t[0], m[0]


@dataclass
class Req:
    tokens: np.ndarray  # [S, K+1]
    mask: np.ndarray
    params: SamplingParams
    seed: int
    start: int  # step at which it is admitted
    frames: int
    slot: int
    chunk: int = 10**6  # prompt rows per step
    codes: list = field(default_factory=list)
    reused: int = 0


def run_schedule(model, reqs, slots):
    """Drive a SlotModel by hand: admit each request at its start step, feed prompt chunks (the
    last with params), then each sampled frame back, until every request has its frames."""
    model.open_slots(slots)
    state = {}  # request index -> rows fed so far (None once its prompt is in)
    step = 0
    while any(len(r.codes) < r.frames for r in reqs):
        for i, r in enumerate(reqs):
            if r.start == step:
                r.reused = model.admit(r.slot, r.seed, r.tokens, r.mask)
                assert model.slot_position(r.slot) == r.reused
                state[i] = r.reused
        feeds, owners = [], []
        for i, r in enumerate(reqs):
            if i not in state or len(r.codes) >= r.frames:
                continue
            if state[i] is None:
                t, m = frame_row(r.codes[-1][None])
                feeds.append(SlotFeed(r.slot, t[0], m[0], r.params))
            else:
                a = state[i]
                b = min(a + r.chunk, len(r.tokens))
                last = b == len(r.tokens)
                feeds.append(SlotFeed(r.slot, r.tokens[a:b], r.mask[a:b], r.params if last else None))
                state[i] = None if last else b
            owners.append(i)
        out = model.step(feeds)
        sampled = [i for f, i in zip(feeds, owners) if f.params is not None]
        assert out.shape == (len(sampled), model.config.audio_num_codebooks) and out.dtype == np.int32
        for i, codes in zip(sampled, out):
            reqs[i].codes.append(codes)
        step += 1
        assert step < 500
    return [np.stack(r.codes) for r in reqs]


def alone(be, r):
    """The request through the FrameModel path, batch 1."""
    be.reset(1, r.seed)
    out = [be.generate_frame(r.tokens[None], r.mask[None], r.params)[0]]
    for _ in range(r.frames - 1):
        out.append(be.generate_frame(*frame_row(out[-1][None]), r.params)[0])
    return np.stack(out)


def mixed_requests(cfg, params):
    """Five requests over 3 slots: different prompt lengths, admitted at different steps, one in
    chunks, two re-using a slot another request left."""
    p = [prompt(cfg, 1), prompt(cfg, 2, ((6, 5), (3, 2)), 7), prompt(cfg, 3, (), 4), prompt(cfg, 4, ((2, 8),), 3),
         prompt(cfg, 5, ((5, 2),), 6)]
    return [
        Req(*p[0], params[0], 11, start=0, frames=6, slot=0),
        Req(*p[1], params[1], 12, start=2, frames=5, slot=2, chunk=7),
        Req(*p[2], params[2], 13, start=3, frames=4, slot=1),
        Req(*p[3], params[3], 14, start=7, frames=4, slot=1, chunk=4),  # slot 1 is free again at step 7
        Req(*p[4], params[4], 15, start=9, frames=3, slot=0),
    ]


def test_greedy_slots_equal_numpy_reference_alone(tiny):
    cfg, w, be = tiny
    reqs = mixed_requests(cfg, [GREEDY] * 5)
    got = run_schedule(be, reqs, 3)
    oracle = run_schedule(FrameModelSlots(lambda: CSMReference(cfg, w)), mixed_requests(cfg, [GREEDY] * 5), 3)
    for g, o in zip(got, oracle):
        np.testing.assert_array_equal(g, o)


@pytest.mark.parametrize("mode", ["sampled", "mixed"])
def test_seeded_slots_equal_the_frame_model_path_alone(tiny, mode):
    cfg, w, be = tiny
    params = [HOT] * 5 if mode == "sampled" else [
        HOT, GREEDY, SamplingParams(1.3, 5), SamplingParams(0.6, 2051, mask_undecodable=False), SamplingParams(0.9, 1)]
    reqs = mixed_requests(cfg, params)
    got = run_schedule(be, reqs, 3)
    single = MlxBackend(cfg, model=be.model)
    for r, g in zip(reqs, got):
        np.testing.assert_array_equal(g, alone(single, r))
    assert not np.array_equal(got[0][:4], got[4][:4])


def test_same_request_in_any_slot_next_to_anything(tiny):
    cfg, _, be = tiny
    t, m = prompt(cfg, 7)
    runs = []
    for slot, others in ((0, []), (3, [0, 1, 2]), (1, [0, 2, 3])):
        reqs = [Req(t, m, HOT, 99, start=0, frames=5, slot=slot)]
        for j, s in enumerate(others):
            reqs.append(Req(*prompt(cfg, 20 + j + slot, ((3, 2 + j),)), SamplingParams(0.5 + j), j, start=j, frames=4, slot=s))
        runs.append(run_schedule(be, reqs, 4)[0])
    np.testing.assert_array_equal(runs[0], runs[1])
    np.testing.assert_array_equal(runs[0], runs[2])
    other_seed = run_schedule(be, [Req(t, m, HOT, 100, start=0, frames=5, slot=0)], 1)[0]
    assert not np.array_equal(runs[0], other_seed)


def test_through_the_scheduler_jobs_equal_the_generator_alone(tiny):
    from csm_core.generation import Generator
    from csm_core.options import GenerationOptions
    from csm_core.scheduler import Scheduler
    from csm_core.segment import Segment
    from csm_core.testing.generation import FakeTokenizer

    cfg, _, be = tiny
    ctx = [Segment(1, "Hello there.", codes=np.random.default_rng(0).integers(1, 2048, (cfg.audio_num_codebooks, 6)))]
    jobs = [
        ("One two. Three four.", ctx, GenerationOptions(seed=5, max_audio_ms=400)),
        ("Five six seven.", [], GenerationOptions(seed=6, temperature=0, max_audio_ms=320)),
        ("Eight.", ctx, GenerationOptions(seed=7, topk=3, max_audio_ms=480)),
        ("Nine ten. Eleven.", [], GenerationOptions(seed=8, max_audio_ms=240)),
    ]
    sched = Scheduler(be, FakeTokenizer(), None, slots=2, prefill_rows=6, chunk_frames=None)
    submitted = [sched.submit(text, 0, c, o) for text, c, o in jobs]
    sched.run()
    single = MlxBackend(cfg, model=be.model)
    for job, (text, c, o) in zip(submitted, jobs):
        assert job.state == "done"
        want = Generator(single, FakeTokenizer()).generate(text, 0, c, o)
        np.testing.assert_array_equal(job.codes, want.codes)
    assert sum(sum(j.stats.reused_prompt_frames) for j in submitted) > 0  # later sentences kept their prefix


def test_scheduler_audio_through_the_batched_mlx_mimi(tiny):
    """Jobs decoded by MlxMimi's batched streaming decoder (rows joining and leaving, chunks of
    2 frames): each job's audio equals the whole-clip decode of its codes."""
    from csm_core.config import mimi_tiny
    from csm_core.scheduler import Scheduler
    from csm_core.testing.generation import FakeTokenizer
    from csm_core.testing.mimi import random_mimi_weights
    from csm_mlx.mimi import MlxMimi

    cfg, _, be = tiny
    codec = MlxMimi(mimi_tiny(), random_mimi_weights(mimi_tiny(), 0))
    sched = Scheduler(be, FakeTokenizer(), codec, slots=2, prefill_rows=8, chunk_frames=2)
    jobs = [sched.submit(t, 0, seed=i, max_audio_ms=ms) for i, (t, ms) in enumerate(
        [("One two.", 400), ("Three. Four five.", 240), ("Six.", 560)])]
    results = [sched.result(j) for j in jobs]
    for r in results:
        assert r.codes.shape[1] > 0 and r.audio.shape == (r.codes.shape[1] * 1920,)
        assert np.abs(r.audio - codec.decode(r.codes)).max() <= 1e-5


def test_frame_model_batch_rows_have_their_own_streams(tiny):
    cfg, _, be = tiny
    t, m = prompt(cfg, 40)
    be.reset(2, 5)
    two = be.generate_frame(np.stack([t, t]), np.stack([m, m]), HOT)
    be.reset(1, 5)
    one = be.generate_frame(t[None], m[None], HOT)
    np.testing.assert_array_equal(two[0], one[0])  # row 0 is the seed's own stream
    assert not np.array_equal(two[0], two[1])


def test_prefix_reuse_per_slot(tiny):
    """A slot keeps the rows it holds; admitting a prompt that repeats them feeds only the rest,
    and the codes equal a fresh run. Other slots are untouched; reuse_prefix=False turns it off."""
    cfg, w, be = tiny
    t, m = prompt(cfg, 8, ((5, 4),), 4)
    first = Req(t, m, GREEDY, 1, start=0, frames=4, slot=1)
    other = Req(*prompt(cfg, 9), GREEDY, 2, start=0, frames=8, slot=0)
    fed = run_schedule(be, [first, other], 2)[0]
    rows = [frame_row(fed[i][None]) for i in range(3)]
    t2 = np.concatenate([t] + [r[0][0] for r in rows] + [prompt(cfg, 10, (), 3)[0]])
    m2 = np.concatenate([m] + [r[1][0] for r in rows] + [prompt(cfg, 10, (), 3)[1]])
    assert be.admit(1, 3, t2, m2) == len(t) + 3
    assert be.slot_position(1) == len(t) + 3
    out = be.step([SlotFeed(1, t2[len(t) + 3 :], m2[len(t) + 3 :], GREEDY)])
    ref = CSMReference(cfg, w)
    ref.reset(1, 0)
    np.testing.assert_array_equal(out[0], ref.generate_frame(t2[None], m2[None], GREEDY)[0])
    assert be.admit(0, 3, t2, m2) == 0  # slot 0 holds another prompt
    changed = t2.copy()
    changed[2, -1] = (changed[2, -1] + 1) % cfg.text_vocab_size
    assert be.admit(1, 3, changed, m2) == 2
    be.reuse_prefix = False
    try:
        assert be.admit(1, 3, t2, m2) == 0
    finally:
        be.reuse_prefix = True


def test_padding_rows_in_a_feed_are_never_attended(tiny):
    """An all-False mask row is padding, as on the FrameModel path: the frame equals the prompt
    without it (positions shift by one, so compare with the reference fed the same rows)."""
    cfg, w, be = tiny
    t, m = prompt(cfg, 11)
    t2 = np.concatenate([t[:3], np.full((1, t.shape[1]), 7), t[3:]])
    m2 = np.concatenate([m[:3], np.zeros((1, m.shape[1]), bool), m[3:]])
    be.open_slots(2)
    be.admit(1, 0, t2, m2)
    got = be.step([SlotFeed(1, t2, m2, GREEDY)])
    ref = CSMReference(cfg, w)
    ref.reset(1, 0)
    np.testing.assert_array_equal(got[0], ref.generate_frame(t2[None], m2[None], GREEDY)[0])


def test_protocol_open_slots_and_switching_back(tiny):
    cfg, _, be = tiny
    assert isinstance(be, SlotModel)
    be.open_slots(3)
    assert be.slots == 3 and [be.slot_position(s) for s in range(3)] == [0, 0, 0]
    with pytest.raises(RuntimeError, match="slots are open"):
        be.generate_frame(*prompt(cfg, 1), GREEDY)
    be.reset(1, 0)  # back to the FrameModel path: the slots are dropped
    assert be.slots == 0
    with pytest.raises(RuntimeError, match="open_slots"):
        be.step([])
    t, m = prompt(cfg, 1)
    assert be.generate_frame(t[None], m[None], GREEDY).shape == (1, cfg.audio_num_codebooks)


def test_bad_feeds_and_admissions_raise_clear_errors(tiny):
    cfg, _, be = tiny
    K = cfg.audio_num_codebooks
    t, m = prompt(cfg, 1)
    with pytest.raises(ValueError, match="slots must be an integer >= 1"):
        be.open_slots(0)
    be.open_slots(2)
    with pytest.raises(ValueError, match=r"slot must be an integer in \[0, 2\), got 2"):
        be.admit(2, 0, t, m)
    with pytest.raises(TypeError, match="seed must be an integer, got float"):
        be.admit(0, 1.5, t, m)
    with pytest.raises(ValueError, match=r"tokens must have shape \(S>=1, 33\)"):
        be.admit(0, 1, t[:, :K], m[:, :K])
    with pytest.raises(ValueError, match="holds no request"):
        be.step([SlotFeed(0, t, m, GREEDY)])
    be.admit(0, 1, t, m)
    be.step([SlotFeed(0, t[:4], m[:4])])
    before = be.slot_position(0)
    bad = t.copy()
    bad[9, K] = cfg.text_vocab_size  # a text row
    assert m[9, K]
    cases = [
        ([SlotFeed(0, bad[4:], m[4:], GREEDY)], ValueError, r"text id 128256 at feeds\[0\].tokens\[5, 32\] is out of range"),
        ([SlotFeed(0, t[4:], m[4:], GREEDY), SlotFeed(0, t[4:], m[4:], GREEDY)], ValueError, "fed twice"),
        ([SlotFeed(5, t[4:], m[4:], GREEDY)], ValueError, r"feeds\[0\].slot must be an integer in \[0, 2\)"),
        ([SlotFeed(0, t[4:, :K], m[4:, :K], GREEDY)], ValueError, r"feeds\[0\].tokens must have shape"),
        ([SlotFeed(0, t[4:], m[4:].astype(int), GREEDY)], ValueError, r"feeds\[0\].mask must be bool"),
        ([SlotFeed(0, np.zeros((2049, K + 1), np.int64), np.ones((2049, K + 1), bool), GREEDY)], ValueError,
         "exceeds the 2048-position window"),
        ([SlotFeed(0, t[4:], m[4:], {"temperature": 0})], TypeError, r"feeds\[0\].params must be a SamplingParams"),
    ]
    for feeds, err, msg in cases:
        with pytest.raises(err, match=msg):
            be.step(feeds)
        assert be.slot_position(0) == before  # nothing was written
    out = be.step([SlotFeed(0, t[4:], m[4:], GREEDY)])
    ref = MlxBackend(cfg, model=be.model)
    ref.reset(1, 0)
    np.testing.assert_array_equal(out[0], ref.generate_frame(t[None], m[None], GREEDY)[0])
    assert be.step([]).shape == (0, K)


def test_slot_cache_is_allocated_once_for_the_window(tiny):
    cfg, _, be = tiny
    be.open_slots(3)
    b = cfg.backbone
    cache = be._slots.cache
    assert cache.keys[0].shape == (3, b.num_kv_heads, b.max_seq_len, b.head_dim)
    assert cache.nbytes == 3 * b.max_seq_len * b.num_layers * 2 * b.num_kv_heads * b.head_dim * 4


def test_sparse_slots_and_joiners_padded_together(tiny, monkeypatch):
    """Running slots far apart and two prompts joining in the same step with different chunk
    lengths (one call, the shorter right-padded), at the bucketed shapes: one-row feeds over every
    slot (sliced), prompt chunks gathered with rows and length rounded up to powers of two."""
    from csm_mlx.slots import SlotRows

    cfg, _, be = tiny
    modes = []
    plan = SlotRows.plan

    def spy(self, st, group):
        out = plan(self, st, group)
        modes.append(("gathered" if out[0].rows is not None else "sliced", out[1].shape[0], out[1].shape[1]))
        return out

    monkeypatch.setattr(SlotRows, "plan", spy)
    reqs = [
        Req(*prompt(cfg, 30), HOT, 1, start=0, frames=6, slot=0),
        Req(*prompt(cfg, 31, ((2, 2),)), HOT, 2, start=0, frames=6, slot=5),
        Req(*prompt(cfg, 32, ((6, 4),)), SamplingParams(0.7, 20), 3, start=2, frames=3, slot=1, chunk=9),
        Req(*prompt(cfg, 33, ((3, 1),)), GREEDY, 4, start=2, frames=3, slot=3, chunk=5),
    ]
    got = run_schedule(be, reqs, 6)
    single = MlxBackend(cfg, model=be.model)
    for r, g in zip(reqs, got):
        np.testing.assert_array_equal(g, alone(single, r))
    assert ("sliced", be.slots, 1) in modes  # slots 0 and 5 decoding alone: all slots' rows
    assert ("gathered", 2, 16) in modes  # slots 1 and 3 joining: 9 and 5 rows in one call of 16


ON_GPU = mx.default_device().type == mx.gpu


@pytest.mark.skipif(
    not ON_GPU and not os.environ.get("CSM_MLX_COMPILE_TESTS"),
    reason="mx.compile on the CPU backend builds its kernels with the C++ compiler at first use (minutes); "
    "set CSM_MLX_COMPILE_TESTS=1 to run",
)
def test_compiled_slots_equal_eager(tiny):
    """The compiled depth decoder (rows padded to a power of two) gives the eager codes, on both paths."""
    cfg, _, be = tiny
    compiled = MlxBackend(cfg, model=be.model, compile=True)
    params = [HOT, GREEDY, SamplingParams(1.3, 5), HOT, SamplingParams(0.9, 1)]
    eager_codes = run_schedule(be, mixed_requests(cfg, params), 3)
    reqs = mixed_requests(cfg, params)
    for g, e in zip(run_schedule(compiled, reqs, 3), eager_codes):
        np.testing.assert_array_equal(g, e)
    np.testing.assert_array_equal(alone(compiled, reqs[0]), eager_codes[0])
