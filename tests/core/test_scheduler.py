"""csm_core.scheduler on the numpy reference (FrameModelSlots): requests that join and leave at
different steps, each with its own prompt, options and seed, give exactly the codes (and audio)
they give alone through Generator; cancelling, refusing and failing disturb nothing else."""

import numpy as np
import pytest

from csm_core import GenerationOptions, OptionError
from csm_core.generation import FRAME_MS, Generator
from csm_core.prompt import ContextOverflowError
from csm_core.reference import CSMReference
from csm_core.scheduler import JobFailed, QueueFullError, Scheduler
from csm_core.slots import FrameModelSlots
from csm_core.testing.csm import load_oracle, oracle_weights
from csm_core.testing.generation import FakeCodec, oracle_request


@pytest.fixture(scope="module")
def parts():
    o = load_oracle("csm_tiny")
    w = oracle_weights(o)
    tz, ctx, target = oracle_request(o)
    return o["config"], w, tz, ctx, target


class Recording(FrameModelSlots):
    """FrameModelSlots keeping every step's feeds."""

    def __init__(self, make):
        super().__init__(make)
        self.steps = []

    def step(self, feeds):
        self.steps.append([(f.slot, f.tokens.shape[0], f.params is not None) for f in feeds])
        return super().step(feeds)


def make(parts, slots=2, **kw):
    cfg, w, tz, _, _ = parts
    model = Recording(lambda: CSMReference(cfg, w))
    return Scheduler(model, tz, FakeCodec(), slots=slots, **kw), model


def alone(parts, text, speaker, context, **options):
    cfg, w, tz, _, _ = parts
    return Generator(CSMReference(cfg, w), tz, FakeCodec()).generate(text, speaker, context, **options)


def test_staggered_requests_equal_each_request_alone(parts):
    _, _, _, ctx, target = parts
    sched, model = make(parts, slots=2, prefill_rows=5)
    reqs = [
        (target, 0, ctx, dict(seed=5, max_audio_ms=10 * FRAME_MS)),
        ("Short one. And a second sentence.", 1, [], dict(temperature=0, max_audio_ms=4 * FRAME_MS)),
        (target, 0, ctx[1:], dict(seed=9, topk=5, temperature=0.7, max_audio_ms=7 * FRAME_MS)),
        ("Late.", 2, [], dict(seed=1, max_audio_ms=3 * FRAME_MS)),
    ]
    jobs = [sched.submit(*r[:3], **r[3]) for r in reqs[:2]]
    for _ in range(6):  # the first two are running when the others arrive
        sched.step()
    jobs += [sched.submit(*r[:3], **r[3]) for r in reqs[2:]]
    results = [sched.result(j) for j in jobs]
    for (text, speaker, context, opts), got in zip(reqs, results):
        want = alone(parts, text, speaker, context, **opts)
        np.testing.assert_array_equal(got.codes, want.codes)
        np.testing.assert_array_equal(got.audio, want.audio)
        assert got.stats.frames == want.stats.frames and got.stats.stop_reasons == want.stats.stop_reasons
    assert results[1].stats.sentences == ["Short one.", "And a second sentence."]
    # two slots: never more than two slots fed in one step; a freed slot was refilled
    assert max(len({s for s, _, _ in st}) for st in model.steps) == 2
    assert {j.slot for j in jobs} == {0, 1}


def test_prefill_is_chunked_and_never_stalls_running_rows(parts):
    _, _, _, ctx, target = parts
    sched, model = make(parts, slots=2, prefill_rows=4)
    first = sched.submit("Hi.", 0, [], seed=3, max_audio_ms=30 * FRAME_MS)
    while first._last is None:
        sched.step()
    second = sched.submit(target, 0, ctx, seed=4, max_audio_ms=2 * FRAME_MS)
    n_before = len(model.steps)
    while not second.done:
        sched.step()
    for feeds in model.steps[n_before:]:
        rows = {s: (n, p) for s, n, p in feeds}
        assert rows[first.slot] == (1, True)  # the running row samples a frame every step
        if second.slot in rows:
            assert rows[second.slot][0] <= 4
    prompt_steps = [f for f in model.steps[n_before:] if any(s == second.slot and not p for s, _, p in f)]
    assert len(prompt_steps) >= 3  # the long prompt took several chunks
    first.cancel()
    sched.run()
    np.testing.assert_array_equal(sched.result(second).codes, alone(parts, target, 0, ctx, seed=4, max_audio_ms=160).codes)


def test_cancel_stops_within_one_step_and_frees_the_slot(parts):
    sched, model = make(parts, slots=1)
    a = sched.submit("First one.", 0, seed=1, max_audio_ms=40 * FRAME_MS)
    b = sched.submit("Second.", 1, seed=2, max_audio_ms=3 * FRAME_MS)
    for _ in range(3):
        sched.step()
    a.cancel()
    n = len(model.steps)
    sched.step()
    assert a.state == "cancelled" and all(s != a.slot or b.slot == s for s, _, _ in model.steps[n])
    assert b.slot == 0 and b.state == "running"  # admitted into the freed slot on that very step
    np.testing.assert_array_equal(sched.result(b).codes, alone(parts, "Second.", 1, [], seed=2, max_audio_ms=240).codes)
    waiting = sched.submit("Never run.", 0)
    waiting.cancel()
    assert not sched.step() and waiting.state == "cancelled"


class EveryStepCodec(FakeCodec):
    """FakeCodec whose batched decoder asks for every step's frames at once (as MLX's on a GPU
    does), recording the frames of each call."""

    def batch_streaming_decoder(self, rows):
        from csm_core.scheduler import _PerRowDecoders

        codec = self

        class Decoder(_PerRowDecoders):
            decode_every_step = True

            def decode(self, rows, codes):
                codec.calls.append(codes.shape[2])
                return super().decode(rows, codes)

        self.calls = []
        return Decoder(self, rows)


@pytest.mark.parametrize("codec", [FakeCodec, EveryStepCodec])
def test_audio_chunks_match_generator_streaming(parts, codec):
    cfg, w, tz, ctx, target = parts
    model = Recording(lambda: CSMReference(cfg, w))
    sched = Scheduler(model, tz, codec(), slots=2, chunk_frames=3)
    job = sched.submit(target, 0, ctx, seed=11, max_audio_ms=8 * FRAME_MS)
    other = sched.submit("Other.", 1, seed=12, max_audio_ms=5 * FRAME_MS)
    chunks = list(sched.audio(job))
    want = list(Generator(CSMReference(cfg, w), tz, FakeCodec()).stream_audio(
        target, 0, ctx, chunk_frames=3, seed=11, max_audio_ms=8 * FRAME_MS))  # fmt: skip
    assert [len(c) for c in chunks] == [len(c) for c in want]
    for c, x in zip(chunks, want):
        np.testing.assert_array_equal(c, x)
    assert job.stats.time_to_first_audio_s is not None
    sched.run()
    assert other.done and other.error is None
    if codec is EveryStepCodec:  # one frame per call, one call per step that sampled
        assert set(sched.codec.calls) == {1} and len(sched.codec.calls) == sched.steps


def test_bad_requests_are_refused_at_submit_and_disturb_nothing(parts):
    _, _, _, ctx, target = parts
    sched, _ = make(parts, slots=1, max_waiting=1)
    job = sched.submit("Keep going.", 0, seed=6, max_audio_ms=6 * FRAME_MS)
    sched.step()
    with pytest.raises(OptionError, match="unknown generation option 'temprature'") as e:
        sched.submit("x", temprature=0.5)
    assert e.value.field == "temprature"
    for bad, field in [(dict(temperature=-1), "temperature"), (dict(topk=0), "topk"), (dict(seed="7"), "seed"),
                       (dict(seed=1.5), "seed"), (dict(max_audio_ms=10), "max_audio_ms")]:  # fmt: skip
        with pytest.raises(OptionError) as e:
            sched.submit("x", **bad)
        assert e.value.field == field and field in str(e.value)
    with pytest.raises(ContextOverflowError, match=r"takes \d+ prompt frames but at most \d+ fit"):
        sched.submit("word " * 400, split_sentences=False)
    with pytest.raises(TypeError, match="speaker"):
        sched.submit("x", speaker="0")
    with pytest.raises(ValueError, match="nothing to speak"):
        sched.submit("...")
    sched.submit("Waits.", 0)
    with pytest.raises(QueueFullError, match="max_waiting=1"):
        sched.submit("One too many.", 0)
    np.testing.assert_array_equal(sched.result(job).codes, alone(parts, "Keep going.", 0, [], seed=6, max_audio_ms=480).codes)


def test_a_failing_model_fails_the_jobs_it_ran(parts):
    sched, model = make(parts, slots=2)
    job = sched.submit("Hello.", 0, seed=1, max_audio_ms=5 * FRAME_MS)
    sched.step()

    def broken(feeds):
        raise RuntimeError("device lost")

    model.step = broken
    with pytest.raises(RuntimeError, match="device lost"):
        sched.step()
    assert job.state == "failed" and not sched.busy
    with pytest.raises(JobFailed, match="device lost"):
        sched.result(job)


def test_options_object_and_overrides(parts):
    opts = GenerationOptions(temperature=0, max_audio_ms=3 * FRAME_MS)
    sched, _ = make(parts)
    a = sched.result(sched.submit("Same.", 0, options=opts))
    b = sched.result(sched.submit("Same.", 0, options=opts, topk=3))  # greedy: topk changes nothing
    np.testing.assert_array_equal(a.codes, b.codes)
    assert GenerationOptions.from_mapping({"seed": 3}, where="line 2").seed == 3
    with pytest.raises(OptionError, match=r"line 2\.topk must be >= 1"):
        GenerationOptions.from_mapping({"topk": 0}, where="line 2")


def test_constructor_checks(parts):
    cfg, w, tz, _, _ = parts
    model = FrameModelSlots(lambda: CSMReference(cfg, w))
    with pytest.raises(TypeError, match="not a csm_core.SlotModel"):
        Scheduler(CSMReference(cfg, w), tz)
    with pytest.raises(ValueError, match="slots must be"):
        Scheduler(model, tz, FakeCodec(), slots=0)
    with pytest.raises(ValueError, match="need a codec"):
        Scheduler(model, tz, None)
