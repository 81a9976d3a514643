"""csm_core.generation with stand-in backends: the official loop, stop rules, context window,
streaming, long text and batches. Parity with the reference backend: test_generation_parity.py."""

import logging

import numpy as np
import pytest

from csm_core import Segment, csm_tiny
from csm_core.generation import Generator, Request, frame_loop
from csm_core.prompt import ContextOverflowError, segment_frames, text_frames
from csm_core.protocols import SamplingParams
from csm_core.testing.generation import FakeCodec, FakeFrameModel, FakeTokenizer

CFG = csm_tiny()
K = CFG.audio_num_codebooks
GREEDY = dict(temperature=0.0)


def make(eos_after=None, codec=True, **kw):
    model = FakeFrameModel(CFG, eos_after=eos_after, **kw)
    return Generator(model, FakeTokenizer(), FakeCodec() if codec else None), model


class ScriptedModel(FakeFrameModel):
    """Returns the given frames [K] in order, whatever it is fed (and keeps the window check)."""

    def __init__(self, frames):
        super().__init__(CFG)
        self.script = [np.asarray(f, np.int32) for f in frames]

    def generate_frame(self, tokens, mask, params):
        if self._position + tokens.shape[1] > CFG.backbone.max_seq_len:
            raise RuntimeError("past the window")
        self._position += tokens.shape[1]
        self.calls.append((tokens, mask))
        return np.stack([self.script[len(self.calls) - 1]] * tokens.shape[0])


def ctx_segment(speaker=1, text="Hello.", frames=3, fill=7):
    return Segment(speaker, text, codes=np.full((K, frames), fill, np.int64))


# ---- the loop: feed-back, stop rules, length ----
def test_frames_are_fed_back_with_an_audio_only_mask():
    gen, model = make(eos_after=4)
    out = gen.generate("Hi.", **GREEDY)
    assert out.codes.shape == (K, 4) and out.codes.dtype == np.int64
    assert len(model.calls) == 5  # prompt, then frames 1..4 fed back; the EOS frame is not
    prompt_tokens, prompt_mask = model.calls[0]
    np.testing.assert_array_equal(prompt_tokens[0], text_frames(FakeTokenizer(), 0, "Hi.", CFG).tokens)
    for i, (tokens, mask) in enumerate(model.calls[1:]):
        assert tokens.shape == (1, 1, K + 1)
        np.testing.assert_array_equal(tokens[0, 0, :K], out.codes[:, i])
        assert tokens[0, 0, K] == 0
        np.testing.assert_array_equal(mask[0, 0], np.arange(K + 1) < K)
    assert out.stats.stop_reasons == ["eos"] and out.stats.frames == [4]


def test_stop_only_when_all_32_codes_are_zero():
    """Official rule: all 32 codebooks. (Hugging Face checks only 0..30 and would stop at frame 1.)"""
    only_last = np.zeros(K, np.int32)
    only_last[K - 1] = 9
    zeros = np.zeros(K, np.int32)
    gen = Generator(ScriptedModel([np.arange(1, K + 1), only_last, zeros, np.ones(K)]), FakeTokenizer())
    out = gen.generate("Hi.", **GREEDY)
    assert out.codes.shape == (K, 2)
    np.testing.assert_array_equal(out.codes[:, 1], only_last)
    assert out.stats.stop_reasons == ["eos"]


def test_first_frame_eos_gives_empty_codes_and_audio():
    gen, _ = make(eos_after=0)
    out = gen.generate("Hi.", **GREEDY)
    assert out.codes.shape == (K, 0) and out.audio.shape == (0,)
    assert out.segments[0].codes.shape == (K, 0)


@pytest.mark.parametrize("ms, frames", [(400, 5), (479, 5), (80, 1), (1000.5, 12)])
def test_max_audio_ms_caps_the_frames(ms, frames):
    gen, model = make()
    out = gen.generate("Hi.", max_audio_ms=ms, **GREEDY)
    assert out.codes.shape == (K, frames) and out.stats.stop_reasons == ["max_length"]
    assert len(model.calls) == frames  # the last frame is never fed back


@pytest.mark.parametrize("ms", [0, -80, 79, float("nan"), float("inf"), "1000", True])
def test_bad_max_audio_ms(ms):
    gen, _ = make()
    with pytest.raises(ValueError, match="max_audio_ms"):
        gen.generate("Hi.", max_audio_ms=ms)


def test_max_audio_ms_beyond_the_window_is_a_clear_error():
    gen, _ = make()
    with pytest.raises(ContextOverflowError, match="2125 frames.*2048-position"):
        gen.generate("Hi.", max_audio_ms=170_000)


def test_default_length_never_runs_past_the_window():
    # No EOS: 1125 frames (90 s) after a prompt at the official limit (922 frames) stays in 2048.
    model = ScriptedModel([np.ones(K)] * 1125)
    gen = Generator(model, FakeTokenizer())
    frames = sum(1 for _ in gen.stream_frames("x" * 917, split_sentences=False, **GREEDY))  # 922 frames
    assert frames == 1125 and model.position <= 2048
    with pytest.raises(ContextOverflowError, match="takes 923 prompt frames but at most 922"):
        gen.generate("x" * 918, split_sentences=False)


# ---- sampling parameters and seeds ----
def test_sampling_params_reach_the_backend():
    gen, model = make(eos_after=1)
    gen.generate("Hi.", temperature=0.5, topk=7, seed=1, mask_undecodable=False)
    assert model.params == SamplingParams(0.5, 7, False, 2048)
    assert model.resets[-1] == (1, 1)


def test_same_seed_same_frames_different_seed_different_frames():
    gen, _ = make()
    a = gen.generate("Hi there.", max_audio_ms=800, seed=11).codes
    b = gen.generate("Hi there.", max_audio_ms=800, seed=11).codes
    c = gen.generate("Hi there.", max_audio_ms=800, seed=12).codes
    np.testing.assert_array_equal(a, b)
    assert (a != c).mean() > 0.5
    np.testing.assert_array_equal(gen.generate("Hi there.", max_audio_ms=800, seed=np.int64(11)).codes, a)


def test_undecodable_codes_are_masked_by_default():
    gen, _ = make()  # the fake favours codes 2048..2050 by +30
    assert gen.generate("Hi.", max_audio_ms=400, **GREEDY).codes.max() < 2048
    assert gen.generate("Hi.", max_audio_ms=400, seed=0).codes.max() < 2048
    raw = gen.generate("Hi.", max_audio_ms=400, mask_undecodable=False, **GREEDY).codes
    assert raw.min() >= 2048  # the official code would emit them


# ---- context ----
def test_context_comes_first_in_order():
    gen, model = make(eos_after=1)
    ctx = [ctx_segment(1, "A.", 2, 5), ctx_segment(0, "B.", 3, 6)]
    gen.generate("C.", 0, ctx, **GREEDY)
    want = np.concatenate(
        [segment_frames(s, FakeTokenizer(), None, CFG).tokens for s in ctx]
        + [text_frames(FakeTokenizer(), 0, "C.", CFG).tokens]
    )
    np.testing.assert_array_equal(model.calls[0][0][0], want)


def test_context_audio_is_encoded_with_the_codec():
    gen, model = make(eos_after=1)
    audio = np.linspace(0, 1, 5000, dtype=np.float32)
    gen.generate("C.", 0, [Segment(1, "A.", audio=audio)], **GREEDY)
    codes = FakeCodec().encode(audio, K)
    np.testing.assert_array_equal(model.calls[0][0][0, 7:10, :K], codes.T)  # after "[1]A." with bos/eos


def test_oldest_context_dropped_whole_with_a_warning(caplog):
    gen, model = make(eos_after=2)
    ctx = [ctx_segment(1, "One.", 300), ctx_segment(0, "Two.", 300), ctx_segment(1, "Three.", 300)]
    sizes = [len(segment_frames(s, FakeTokenizer(), None, CFG)) for s in ctx]
    target = len(text_frames(FakeTokenizer(), 0, "Four.", CFG))
    with caplog.at_level(logging.WARNING, logger="csm_core.generation"):
        out = gen.generate("Four.", 0, ctx, **GREEDY)  # 90 s requested: prompt <= 922 frames
    assert sum(sizes) + target > 922 and sizes[1] + sizes[2] + target <= 922
    assert out.stats.dropped_context == 1
    assert out.stats.prompt_frames == [sizes[1] + sizes[2] + target]
    assert "dropped the 1 oldest of 3 context segment(s)" in caplog.text
    first_prompt = model.calls[0][0][0]
    np.testing.assert_array_equal(first_prompt[: sizes[1]], segment_frames(ctx[1], FakeTokenizer(), None, CFG).tokens)
    # A shorter requested length leaves room for everything.
    caplog.clear()
    out = gen.generate("Four.", 0, ctx, max_audio_ms=60_000, **GREEDY)
    assert out.stats.dropped_context == 0 and not caplog.records


def test_target_that_cannot_fit_raises_with_the_numbers():
    gen, model = make()
    with pytest.raises(ContextOverflowError, match="takes 1003 prompt frames but at most 922"):
        gen.generate("y" * 998, split_sentences=False)
    # With splitting, a later sentence that cannot fit fails at the call, before any frame.
    with pytest.raises(ContextOverflowError, match="takes 303 prompt frames but at most 297"):
        gen.stream_frames("Short. " + "z" * 298, max_audio_ms=140_000)
    assert not model.calls


def test_context_validation_errors():
    gen, _ = make()
    with pytest.raises(ValueError, match=r"context\[1\].*neither audio nor codes"):
        gen.generate("Hi.", 0, [ctx_segment(), Segment(0, "text only")])
    with pytest.raises(TypeError, match="Segment"):
        gen.generate("Hi.", 0, [("0", "x")])
    nocodec, _ = make(codec=False)
    with pytest.raises(ValueError, match="no codec"):
        nocodec.generate("Hi.", 0, [Segment(0, "x", audio=np.zeros(100, np.float32))])


# ---- input edge cases ----
@pytest.mark.parametrize("text", ["", "   ", "...", "?!", " . , ;\n--"])
def test_nothing_to_speak_is_a_clear_error(text):
    gen, _ = make()
    with pytest.raises(ValueError, match="nothing to speak"):
        gen.generate(text)
    with pytest.raises(ValueError, match="nothing to speak"):
        gen.stream_frames(text)  # raised at the call, not at the first next()


@pytest.mark.parametrize("speaker", [-1, 1.0, "0", None, True])
def test_bad_speaker_is_a_clear_error(speaker):
    gen, _ = make()
    with pytest.raises((TypeError, ValueError), match="speaker must be a non-negative integer"):
        gen.generate("Hi.", speaker)


def test_non_string_text_and_bad_seed():
    gen, _ = make()
    with pytest.raises(TypeError, match="text must be a str"):
        gen.generate(b"Hi.")
    with pytest.raises(ValueError, match="seed"):
        gen.generate("Hi.", seed=-1)
    with pytest.raises(TypeError, match=r"object does not implement csm_core.FrameModel: no \['config', 'reset'"):
        Generator(object(), FakeTokenizer())
    with pytest.raises(TypeError, match="TextTokenizer: no \\['encode'\\]"):
        Generator(FakeFrameModel(CFG), object())


# ---- long text ----
def test_long_text_is_generated_sentence_by_sentence_with_previous_sentences_as_context():
    gen, model = make(eos_after=3)
    user = ctx_segment(1, "Before.", 2)
    out = gen.generate("One two. Three four! Five?", 0, [user], **GREEDY)
    assert out.stats.sentences == ["One two.", "Three four!", "Five?"]
    assert out.codes.shape == (K, 9) and out.stats.frames == [3, 3, 3]
    assert [s.text for s in out.segments] == out.stats.sentences
    np.testing.assert_array_equal(np.concatenate([s.codes for s in out.segments], 1), out.codes)
    # The third sentence's prompt: user context, sentence 1 + its codes, sentence 2 + its codes, "Five?".
    prompts = [tokens[0] for tokens, _ in model.calls if tokens.shape[1] > 1]
    assert len(prompts) == 1  # calls are per sentence run; the model was reset for each
    parts = [user, *out.segments[:2]]
    want = np.concatenate(
        [segment_frames(s, FakeTokenizer(), None, CFG).tokens for s in parts]
        + [text_frames(FakeTokenizer(), 0, "Five?", CFG).tokens]
    )
    np.testing.assert_array_equal(prompts[0], want)
    assert out.stats.prompt_frames[-1] == len(want)


def test_split_sentences_off_generates_one_prompt():
    gen, _ = make(eos_after=3)
    out = gen.generate("One two. Three four!", split_sentences=False, **GREEDY)
    assert out.stats.sentences == ["One two. Three four!"] and out.codes.shape == (K, 3)


def test_long_text_drops_earlier_sentences_before_the_callers_context(caplog):
    gen, _ = make(eos_after=40)
    user = ctx_segment(1, "Reference voice.", 30)
    text = " ".join(f"Sentence number {i}." for i in range(6))
    with caplog.at_level(logging.INFO, logger="csm_core.generation"):
        out = gen.generate(text, 0, [user], max_audio_ms=7_200, **GREEDY)  # 90 frames: prompt <= 1957
    assert len(out.stats.sentences) == 6 and not caplog.records  # everything fits
    # user 21 text + 31 audio frames, target 23; each earlier sentence adds 23 text + 40 codes + EOS.
    assert out.stats.prompt_frames == [75 + 64 * i for i in range(6)]
    with caplog.at_level(logging.INFO, logger="csm_core.generation"):
        out = gen.generate(text, 0, [user], max_audio_ms=150_000, **GREEDY)  # prompt <= 172 frames
    assert out.stats.dropped_context == 0  # the caller's voice clip is kept ...
    assert "earlier generated sentence" in caplog.text  # ... and older sentences go first
    assert max(out.stats.prompt_frames) <= 172


def test_seeded_long_text_is_reproducible():
    gen, model = make(eos_after=4)
    a = gen.generate("One. Two. Three.", seed=5).codes
    seeds = [s for _, s in model.resets[-3:]]
    b = gen.generate("One. Two. Three.", seed=5).codes
    np.testing.assert_array_equal(a, b)
    assert seeds[0] == 5 and len(set(seeds)) == 3  # independent seeds per sentence


# ---- streaming ----
def test_stream_frames_yields_what_generate_returns():
    gen, model = make(eos_after=6)
    stream = gen.stream_frames("One. Two.", seed=3)
    first = next(stream)
    assert len(model.calls) == 1  # the first frame came from the prefill alone
    assert stream.stats.time_to_first_frame_s is not None
    frames = [first, *stream]
    np.testing.assert_array_equal(np.stack(frames, 1), gen.generate("One. Two.", seed=3).codes)
    assert stream.stats.frames == [6, 6] and stream.stats.elapsed_s >= stream.stats.time_to_first_frame_s


@pytest.mark.parametrize("chunk", [1, 4, 5, 50])
def test_stream_audio_chunks_join_to_the_whole_clip_decode(chunk):
    gen, model = make(eos_after=10)
    stream = gen.stream_audio("One. Two.", chunk_frames=chunk, seed=2)
    first = next(stream)
    assert stream.stats.time_to_first_audio_s is not None
    if chunk < 20:
        assert len(model.calls) < 10  # audio arrived before generation ended
    chunks = [first, *stream]
    full = gen.generate("One. Two.", seed=2)
    assert [len(c) for c in chunks[:-1]] == [chunk * 1920] * (len(chunks) - 1)
    np.testing.assert_array_equal(np.concatenate(chunks), full.audio)
    assert full.audio.shape == (20 * 1920,) and full.sample_rate == 24_000


def test_stream_audio_needs_a_codec_and_a_valid_chunk_size():
    gen, _ = make(codec=False)
    with pytest.raises(ValueError, match="codec"):
        gen.stream_audio("Hi.")
    gen, _ = make()
    with pytest.raises(ValueError, match="chunk_frames"):
        gen.stream_audio("Hi.", chunk_frames=0)


# ---- batch ----
def test_batch_rows_match_single_runs_and_stop_independently():
    requests = [Request("Hi.", 0), Request("A longer sentence here.", 1, [ctx_segment()]), "Third!"]
    eos = [2, 5, 3]
    gen, model = make(eos_after=eos)
    outs = gen.generate_batch(requests, **GREEDY)
    assert [o.codes.shape[1] for o in outs] == eos
    assert [o.stats.stop_reasons for o in outs] == [["eos"]] * 3
    # Left padding: the first call has all-False mask rows in front of the shorter prompts.
    tokens, mask = model.calls[0]
    lengths = [o.stats.prompt_frames[0] for o in outs]
    assert tokens.shape[1] == max(lengths)
    for b, n in enumerate(lengths):
        assert not mask[b, : tokens.shape[1] - n].any() and mask[b, tokens.shape[1] - n :].any(axis=1).all()
    # A finished row is fed padding while the others continue.
    _, mask_step3 = model.calls[3]
    assert not mask_step3[0].any() and mask_step3[1, 0, :K].all() and mask_step3[2, 0, :K].all()
    assert len(model.calls) == 6  # row 1: five frames, then its EOS frame ends the batch
    for r, e, o in zip(requests, eos, outs):
        single, _ = make(eos_after=e)
        r = Request(r) if isinstance(r, str) else r
        np.testing.assert_array_equal(o.codes, single.generate(r.text, r.speaker, r.context, split_sentences=False, **GREEDY).codes)
        assert o.audio.shape == (e * 1920,)


@pytest.mark.parametrize("chunk", [1, 2, 4])
def test_stream_batch_audio_streams_each_row_and_ends_each_on_its_own(chunk):
    requests = [Request("Hi.", 0), Request("A longer sentence here.", 1, [ctx_segment()]), "Third!"]
    eos = [2, 5, 3]
    gen, _ = make(eos_after=eos)
    whole = gen.generate_batch(requests, **GREEDY)
    gen, model = make(eos_after=eos)
    events = list(gen.stream_batch_audio(requests, chunk_frames=chunk, **GREEDY))
    for b, (e, out) in enumerate(zip(eos, whole)):
        mine = [c for i, c in events if i == b]
        assert mine[-1] is None and all(c is not None for c in mine[:-1])  # chunks, then the end
        assert [len(c) for c in mine[:-2]] == [chunk * 1920] * (len(mine) - 2)
        np.testing.assert_array_equal(np.concatenate(mine[:-1]), out.audio)
    ends = [n for n, (i, c) in enumerate(events) if c is None]
    assert [events[n][0] for n in ends] == [0, 2, 1]  # each request ends when its row does
    assert ends[0] < len(events) - 3  # row 0's end came while the others were still generating


def test_stream_batch_audio_checks_input_before_it_starts():
    gen, model = make()
    with pytest.raises(ContextOverflowError) as err:
        gen.stream_batch_audio(["a", "word " * 3000])
    assert err.value.request_index == 1 and not model.calls
    with pytest.raises(ValueError, match="chunk_frames"):
        gen.stream_batch_audio(["a"], chunk_frames=0)
    with pytest.raises(ValueError, match="codec"):
        make(codec=False)[0].stream_batch_audio(["a"])


def test_batch_max_length_and_errors():
    gen, _ = make()
    outs = gen.generate_batch(["a", "b"], max_audio_ms=240, seed=1)
    assert [o.codes.shape for o in outs] == [(K, 3), (K, 3)]
    assert outs[0].stats.stop_reasons == ["max_length"]
    with pytest.raises(ValueError, match="at least one"):
        gen.generate_batch([])
    with pytest.raises(ValueError, match=r"requests\[1\].text has nothing to speak"):
        gen.generate_batch(["a", "..."])
    with pytest.raises((TypeError, ValueError), match=r"requests\[0\].speaker"):
        gen.generate_batch([Request("a", -2)])
    with pytest.raises(ContextOverflowError, match=r"^requests\[1\]: the target text takes") as err:
        gen.generate_batch(["a", "word " * 3000])
    assert err.value.request_index == 1
    for bad, index, message in (
        (["a", "b", "word " * 3000], 2, "target text takes"),
        (["a", Request("b", -1)], 1, r"requests\[1\].speaker"),
        ([Request("a", 0, (Segment(0, "no audio"),))], 0, r"requests\[0\].context\[0\].*neither audio nor codes"),
        (["a", 3], 1, "must be a Request or str"),
    ):
        with pytest.raises((TypeError, ValueError), match=message) as err:
            gen.check_requests(bad)
        assert err.value.request_index == index
    with pytest.raises(ContextOverflowError):
        gen.check_requests(["word " * 300])
    gen.check_requests(["word " * 300], max_audio_ms=80)  # fits with a shorter audio limit


def test_frame_loop_rejects_a_backend_returning_the_wrong_shape():
    class Bad(FakeFrameModel):
        def generate_frame(self, tokens, mask, params):
            return np.ones((1, 8), np.int32)

    tokens = np.zeros((1, 3, K + 1), np.int64)
    with pytest.raises(RuntimeError, match=r"shape \(1, 8\), expected \(1, 32\)"):
        next(frame_loop(Bad(CFG), tokens, tokens.astype(bool), SamplingParams(), 5))
