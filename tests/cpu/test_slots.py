"""CpuBackend as a SlotModel (continuous batching): every slot gives exactly the codes of its
request alone, whatever runs next to it, when it joins, in which slot and in how many prompt chunks."""

from dataclasses import dataclass, field

import numpy as np
import pytest

from csm_core import Segment
from csm_core.config import csm_tiny
from csm_core.generation import Generator
from csm_core.options import GenerationOptions
from csm_core.protocols import SamplingParams, SlotFeed, SlotModel
from csm_core.reference import CSMReference
from csm_core.scheduler import Scheduler
from csm_core.slots import FrameModelSlots
from csm_core.testing.csm import make_prompt, random_csm_weights, run_frames
from csm_core.testing.generation import FakeTokenizer
from csm_cpu.backend import CpuBackend

GREEDY = SamplingParams(temperature=0.0, mask_undecodable=False)


@pytest.fixture(scope="module")
def model():
    cfg = csm_tiny()
    return cfg, random_csm_weights(cfg, 21)


@dataclass
class Req:
    """One request in a scripted run: admitted into `slot` at step `start`, its prompt fed in
    `chunks` (row counts, one feed per step; the rest in the last), then `frames` frames."""

    tokens: np.ndarray  # [S, K+1]
    mask: np.ndarray
    params: SamplingParams
    seed: int
    frames: int
    start: int
    slot: int
    chunks: tuple[int, ...] = ()
    # run state
    fed: int = 0
    kept: int = 0
    nchunks: int = 0
    codes: list = field(default_factory=list)


def requests(cfg, specs):
    rng = np.random.default_rng(7)
    out = []
    for ctx, text, params, seed, frames, start, slot, chunks in specs:
        t, m = make_prompt(cfg, rng, context=ctx, target_text_len=text)
        out.append(Req(t[0], m[0], params, seed, frames, start, slot, chunks))
    return out


def drive(model, slots, reqs, reverse_every=2):
    """Run `reqs` on a SlotModel, each step feeding every admitted request (running ones their
    last frame, joining ones their next prompt chunk); the feed order flips every other step."""
    model.open_slots(slots)
    busy = {}
    step = 0
    while any(len(r.codes) < r.frames for r in reqs):
        for r in reqs:
            if r.start == step:
                assert r.slot not in busy, "script error: slot still busy"
                r.kept = r.fed = model.admit(r.slot, r.seed, r.tokens, r.mask)
                busy[r.slot] = r
        feeds, owners = [], []
        for r in busy.values():
            if r.codes:
                t = np.zeros((1, r.tokens.shape[1]), np.int64)
                t[0, :-1] = r.codes[-1]
                m = np.zeros(t.shape, bool)
                m[0, :-1] = True
                feeds.append(SlotFeed(r.slot, t, m, r.params))
            else:
                n = r.chunks[r.nchunks] if r.nchunks < len(r.chunks) else r.tokens.shape[0]
                r.nchunks += 1
                end = min(r.tokens.shape[0], r.fed + n)
                feeds.append(SlotFeed(r.slot, r.tokens[r.fed:end], r.mask[r.fed:end], r.params if end == r.tokens.shape[0] else None))
                r.fed = end
            owners.append(r)
        if step % reverse_every:
            feeds, owners = feeds[::-1], owners[::-1]
        if feeds:
            codes = model.step(feeds)
            sampled = [r for f, r in zip(feeds, owners) if f.params is not None]
            assert codes.shape == (len(sampled), model.config.audio_num_codebooks) and codes.dtype == np.int32
            for r, c in zip(sampled, codes):
                r.codes.append(c.copy())
                if len(r.codes) == r.frames:
                    del busy[r.slot]
        step += 1
        assert step < 500
    return [np.stack(r.codes) for r in reqs]


def alone(cfg, w, quant, r):
    be = CpuBackend(cfg, w, quant, threads=2)
    return run_frames(be, r.tokens[None], r.mask[None], r.frames, r.params, seed=r.seed)[0]


def staggered(cfg, sampling):
    """Four requests over three slots: different prompt lengths, join steps, chunkings, options;
    slot 1 is used twice (its second request joins while the others run)."""
    p = sampling
    hot = SamplingParams(temperature=1.3, topk=7, mask_undecodable=False) if p is not GREEDY else GREEDY
    return requests(cfg, [
        (((3, 2),), 4, p, 11, 7, 0, 0, ()),
        (((7, 5), (6, 4)), 8, hot, 12, 4, 1, 1, (5, 9)),
        (((2, 1),), 2, p, 13, 6, 2, 2, (3,)),
        (((4, 6),), 5, p, 14, 5, 8, 1, (1, 2, 30)),
    ])


def test_cpu_backend_is_a_slot_model(model):
    cfg, w = model
    assert isinstance(CpuBackend(cfg, w, "f32", threads=1), SlotModel)


def test_slots_equal_the_reference_oracle(model):
    """f32 greedy: the codes FrameModelSlots gives over the numpy reference (each request alone)."""
    cfg, w = model
    got = drive(CpuBackend(cfg, w, "f32", threads=2), 3, staggered(cfg, GREEDY))
    want = drive(FrameModelSlots(lambda: CSMReference(cfg, w)), 3, staggered(cfg, GREEDY))
    for g, o in zip(got, want):
        np.testing.assert_array_equal(g, o)


@pytest.mark.parametrize("quant,sampling", [
    ("f32", GREEDY), ("q8_0", GREEDY), ("q8_0", SamplingParams(temperature=0.9, topk=50)),
    ("q4_0", SamplingParams(temperature=1.1, topk=2051, mask_undecodable=True)),
])
def test_slots_equal_each_request_alone(model, quant, sampling):
    """Rows joining at different steps with different prompt lengths, chunked prompts, options and
    seeds give exactly the codes of reset(1, seed) + generate_frame alone (bit-exact products)."""
    cfg, w = model
    reqs = staggered(cfg, sampling)
    got = drive(CpuBackend(cfg, w, quant, threads=2), 3, reqs)
    for r, g in zip(reqs, got):
        np.testing.assert_array_equal(g, alone(cfg, w, quant, r))
    assert sampling.greedy or len(np.unique(np.concatenate(got))) > 40
    assert reqs[3].kept == 0  # a different prompt in a used slot: nothing to keep


def test_a_request_gives_the_same_codes_in_any_slot(model):
    cfg, w = model
    p = SamplingParams(temperature=0.9, topk=40)
    be = CpuBackend(cfg, w, "q8_0", threads=2)
    runs = []
    for slot in (0, 3):
        (r,) = requests(cfg, [(((3, 2),), 4, p, 5, 5, 0, slot, ())])
        runs.append(drive(be, 4, [r])[0])
    np.testing.assert_array_equal(runs[0], runs[1])
    (r,) = requests(cfg, [(((3, 2),), 4, p, 6, 5, 0, 0, ())])
    assert not np.array_equal(drive(be, 4, [r])[0], runs[0])  # another seed, another stream


def test_readmitted_slot_gets_a_fresh_stream_and_leaves_the_others(model):
    """Slot 0 is admitted again while slot 1 runs: the new request (the first one's prompt and
    seed) gets its stream afresh from its seed, and slot 1's request goes on with exactly its
    codes alone."""
    cfg, w = model
    p = SamplingParams(temperature=1.0, topk=30)
    be = CpuBackend(cfg, w, "q8_0", threads=2)
    a, b = requests(cfg, [(((3, 2),), 4, p, 1, 3, 0, 0, ()), (((5, 3),), 6, p, 2, 9, 0, 1, ())])
    c = Req(a.tokens, a.mask, p, 1, 5, 3, 0)
    got = drive(be, 2, [a, b, c])
    np.testing.assert_array_equal(got[1], alone(cfg, w, "q8_0", b))
    np.testing.assert_array_equal(got[2], alone(cfg, w, "q8_0", c))
    np.testing.assert_array_equal(got[2][:3], got[0])  # same prompt and seed as a: the same start
    assert c.kept == a.tokens.shape[0] - 1  # its prompt is what slot 0 held: only the last row ran


def test_scheduler_requests_equal_generate_alone(model):
    """Requests submitted at different times, with context, options and seeds of their own, give
    through the scheduler the codes Generator.generate gives each alone."""
    cfg, w = model
    tok = FakeTokenizer()
    ctx = [Segment(1, "Hi there.", codes=np.random.default_rng(0).integers(1, 2048, (32, 5)))]
    reqs = [
        ("Hello.", 0, (), GenerationOptions(seed=3, max_audio_ms=560, temperature=0.8, topk=20)),
        ("A longer one. With two sentences.", 1, ctx, GenerationOptions(seed=4, max_audio_ms=400)),
        ("Greedy words here.", 0, ctx, GenerationOptions(seed=5, max_audio_ms=320, temperature=0)),
        ("Late.", 2, (), GenerationOptions(seed=6, max_audio_ms=480, mask_undecodable=False)),
    ]
    sched = Scheduler(CpuBackend(cfg, w, "q8_0", threads=2), tok, None, slots=3, prefill_rows=16, chunk_frames=None)
    jobs = [sched.submit(*reqs[0][:3], options=reqs[0][3])]
    for _ in range(3):
        sched.step()
    jobs += [sched.submit(*r[:3], options=r[3]) for r in reqs[1:3]]
    sched.step()
    jobs.append(sched.submit(*reqs[3][:3], options=reqs[3][3]))
    results = [sched.result(j) for j in jobs]
    gen = Generator(CpuBackend(cfg, w, "q8_0", threads=2), tok)
    for (text, spk, c, opts), res in zip(reqs, results):
        want = gen.generate(text, spk, c, opts)
        np.testing.assert_array_equal(res.codes, want.codes)
        assert res.stats.frames == want.stats.frames
    assert results[1].stats.reused_prompt_frames[1] > 0  # second sentence kept the first one's prompt


def test_prefix_reuse_per_slot(model):
    """A multi-sentence request in one slot next to another: each later sentence keeps the earlier
    prompt in its slot (reused_prompt_frames > 0) and the codes equal those with reuse off."""
    cfg, w = model
    tok = FakeTokenizer()
    ctx = [Segment(1, "Hello there.", codes=np.random.default_rng(0).integers(1, 2048, (32, 6)))]
    runs = []
    for reuse in (True, False):
        be = CpuBackend(cfg, w, "q4_0", threads=2)
        be.reuse_prefix = reuse
        sched = Scheduler(be, tok, None, slots=2, chunk_frames=None)
        other = sched.submit("Something else entirely.", 0, options=GenerationOptions(seed=2, max_audio_ms=800))
        job = sched.submit("One two. Three four. Five six.", 1, ctx, GenerationOptions(seed=7, max_audio_ms=480))
        runs.append((sched.result(job), sched.result(other)))
    (on, on_other), (off, off_other) = runs
    np.testing.assert_array_equal(on.codes, off.codes)
    np.testing.assert_array_equal(on_other.codes, off_other.codes)
    st = on.stats
    assert len(st.sentences) == 3 and off.stats.reused_prompt_frames == [0, 0, 0]
    for j in (1, 2):  # the previous prompt and all its frames but an unfed last one are kept
        assert st.reused_prompt_frames[j] >= st.prompt_frames[j - 1] + st.frames[j - 1] - 1


def test_bad_feeds_raise_and_leave_the_slots_intact(model):
    cfg, w = model
    K1 = cfg.audio_num_codebooks + 1
    p = SamplingParams(temperature=0.9, topk=50)
    be = CpuBackend(cfg, w, "q8_0", threads=2)
    with pytest.raises(RuntimeError, match="open_slots"):
        be.step([])
    a, b = requests(cfg, [(((3, 2),), 4, p, 1, 6, 0, 0, ()), (((2, 2),), 3, p, 2, 6, 0, 1, ())])
    be.open_slots(3)
    for r in (a, b):
        be.admit(r.slot, r.seed, r.tokens, r.mask)
    codes = be.step([SlotFeed(0, a.tokens, a.mask, p), SlotFeed(1, b.tokens, b.mask, p)])
    positions = [be.slot_position(s) for s in range(3)]
    row = np.zeros((1, K1), np.int64)
    on = np.ones((1, K1), bool)
    good = SlotFeed(0, row, on, p)
    bad = [
        ([SlotFeed(3, row, on, p)], ValueError, r"feeds\[0\].slot must be an integer in \[0, 3\)"),
        ([SlotFeed(-1, row, on, p)], ValueError, "slot must be"),
        ([good, SlotFeed(0, row, on, p)], ValueError, r"feeds\[1\]: slot 0 is fed twice"),
        ([good, SlotFeed(1, np.zeros((2048, K1), np.int64), np.ones((2048, K1), bool), p)], ValueError,
         r"feeds\[1\]: slot 1 at position \d+ \+ 2048 rows exceeds the 2048-position window"),
        ([good, SlotFeed(1, row[:, :5], on[:, :5], p)], ValueError, r"feeds\[1\].tokens must have shape \(S>=1, 33\)"),
        ([good, SlotFeed(1, row, on.astype(np.int8), p)], ValueError, r"feeds\[1\].mask must be bool"),
        ([good, SlotFeed(1, row.astype(np.float32), on, p)], ValueError, r"feeds\[1\].tokens must be integers"),
        ([good, SlotFeed(1, row + 4000, on, p)], ValueError, r"audio code 4000 at feeds\[1\].tokens\[0, 0\] is out of range \[0, 2051\)"),
        ([good, SlotFeed(2, np.full((1, K1), -1), on, p)], ValueError, r"audio code -1 at feeds\[1\].tokens\[0, 0\] is out of range"),
        ([good, SlotFeed(1, row, on, {"temperature": 1})], TypeError, r"feeds\[1\].params must be SamplingParams"),
        ([good, (1, row, on)], TypeError, r"feeds\[1\] must be a SlotFeed"),
    ]
    for feeds, exc, msg in bad:
        with pytest.raises(exc, match=msg):
            be.step(feeds)
        assert [be.slot_position(s) for s in range(3)] == positions
    with pytest.raises(ValueError, match=r"slot must be an integer in \[0, 3\)"):
        be.admit(5, 1, a.tokens, a.mask)
    with pytest.raises(ValueError, match="admit: seed must be an integer"):
        be.admit(2, "7", a.tokens, a.mask)
    with pytest.raises(ValueError, match=r"admit: tokens must have shape \(S>=1, 33\)"):
        be.admit(2, 1, a.tokens[None], a.mask[None])
    with pytest.raises(ValueError, match="admit: mask must be bool"):
        be.admit(2, 1, a.tokens, a.mask.astype(int))
    with pytest.raises(RuntimeError, match="the caches hold slots"):
        be.generate_frame(a.tokens[None], a.mask[None], p)
    # the two slots go on exactly as alone
    a.codes, b.codes = [codes[0]], [codes[1]]
    while len(a.codes) < a.frames:
        t = np.zeros((2, K1), np.int64)
        t[0, :-1], t[1, :-1] = a.codes[-1], b.codes[-1]
        m = np.zeros((2, K1), bool)
        m[:, :-1] = True
        c = be.step([SlotFeed(1, t[1:], m[1:], p), SlotFeed(0, t[:1], m[:1], p)])
        b.codes.append(c[0])
        a.codes.append(c[1])
    for r in (a, b):
        np.testing.assert_array_equal(np.stack(r.codes), alone(cfg, w, "q8_0", r))
    # back to the FrameModel path on the same caches
    be.reset(1, 1)
    np.testing.assert_array_equal(run_frames(be, a.tokens[None], a.mask[None], 6, p, seed=1)[0], alone(cfg, w, "q8_0", a))


def test_memory_per_slot_position(model):
    from csm_core.config import csm_1b

    cfg, w = model
    be = CpuBackend(cfg, w, "f32", threads=1)
    # tiny backbone: 2 layers, 2 kv heads of 16: K and V fp32, + valid flag + held row (33 x 9 bytes)
    assert be.bytes_per_slot_position() == 2 * 2 * 32 * 4 + 1 + 33 * 9
    d = csm_1b().backbone
    assert 2 * d.num_layers * d.num_kv_heads * (d.embed_dim // d.num_heads) * 4 == 65536
