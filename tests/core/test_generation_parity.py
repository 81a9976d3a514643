"""Generation on the numpy reference backend against the Hugging Face greedy oracle
(tests/fixtures/csm_tiny_oracle.npz, `greedy_frames` from `generate(do_sample=False,
depth_decoder_do_sample=False)` on a two-context-segment prompt)."""

import numpy as np
import pytest

from csm_core.generation import FRAME_MS, Generator, Request, frame_loop
from csm_core.protocols import SamplingParams
from csm_core.reference import CSMReference
from csm_core.testing.csm import load_oracle, oracle_weights
from csm_core.testing.generation import FakeCodec, oracle_request


@pytest.fixture(scope="module")
def oracle():
    return load_oracle("csm_tiny")


@pytest.fixture(scope="module")
def model(oracle):
    return CSMReference(oracle["config"], oracle_weights(oracle))


@pytest.fixture(scope="module")
def request_parts(oracle):
    """The oracle prompt as (tokenizer, 2 context segments, target text)."""
    return oracle_request(oracle)


def test_greedy_generation_reproduces_the_oracle_frames(oracle, model, request_parts):
    tz, context, target = request_parts
    want = oracle["greedy_frames"]  # [N, 32]
    assert len(want) >= 20 and len(context) == 2
    gen = Generator(model, tz)
    out = gen.generate(target, 0, context, temperature=0.0, max_audio_ms=len(want) * FRAME_MS)
    np.testing.assert_array_equal(out.codes.T, want)
    assert out.stats.prompt_frames == [oracle["tokens"].shape[1]]
    assert out.stats.stop_reasons == ["max_length"]


def test_greedy_generation_on_the_cpu_backend_reproduces_the_oracle_frames(oracle, request_parts):
    """The same request through csm_cpu's FrameModel (where it is built): the protocol end to end."""
    backend = pytest.importorskip("csm_cpu.backend")
    tz, context, target = request_parts
    want = oracle["greedy_frames"]
    gen = Generator(backend.CpuBackend(oracle["config"], oracle_weights(oracle), threads=1), tz)
    out = gen.generate(target, 0, context, temperature=0.0, max_audio_ms=len(want) * FRAME_MS)
    np.testing.assert_array_equal(out.codes.T, want)


def test_frame_loop_on_the_oracle_prompt(oracle, model):
    want = oracle["greedy_frames"]
    frames = [f[0] for f, _ in frame_loop(model, oracle["tokens"], oracle["mask"], SamplingParams(0.0), len(want))]
    np.testing.assert_array_equal(np.stack(frames), want)


def test_seeded_sampling_is_reproducible_on_the_reference(model, request_parts):
    tz, context, target = request_parts
    gen = Generator(model, tz, FakeCodec())
    runs = [gen.generate(target, 0, context, max_audio_ms=480, seed=42).codes for _ in range(2)]
    other = gen.generate(target, 0, context, max_audio_ms=480, seed=43).codes
    np.testing.assert_array_equal(runs[0], runs[1])
    assert (runs[0] != other).mean() > 0.5 and runs[0].max() < 2048
    streamed = np.stack(list(gen.stream_frames(target, 0, context, max_audio_ms=480, seed=42)), 1)
    np.testing.assert_array_equal(streamed, runs[0])


def test_greedy_batch_rows_equal_single_runs_on_the_reference(oracle, model, request_parts):
    """Left-padded prompts of different lengths give each row its own greedy frames."""
    tz, context, target = request_parts
    gen = Generator(model, tz)
    requests = [Request(target, 0, context), Request("Short one.", 1), Request(target, 0, context[1:])]
    outs = gen.generate_batch(requests, temperature=0.0, max_audio_ms=8 * FRAME_MS)
    np.testing.assert_array_equal(outs[0].codes.T, oracle["greedy_frames"][:8])
    for r, o in zip(requests[1:], outs[1:]):
        single = gen.generate(r.text, r.speaker, r.context, temperature=0.0, max_audio_ms=8 * FRAME_MS)
        np.testing.assert_array_equal(o.codes, single.codes)
