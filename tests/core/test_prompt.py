"""csm_core.prompt: prompt frames exactly as the official generator builds them (spec/csm.md §2)."""

import numpy as np
import pytest

from csm_core import Segment, csm_tiny
from csm_core.prompt import (
    HeldRows,
    ContextOverflowError,
    PromptFrames,
    audio_frames,
    check_speaker,
    fit_prompt,
    left_pad,
    max_prompt_frames,
    segment_frames,
    text_frames,
)
from csm_core.testing.csm import load_oracle
from csm_core.testing.generation import FakeCodec, FakeTokenizer, oracle_request

CFG = csm_tiny()
K = CFG.audio_num_codebooks


def test_text_frames_are_speaker_prefixed_ids_with_bos_eos_in_the_text_column():
    f = text_frames(FakeTokenizer(), 3, "Hi", CFG)
    ids = [128000, *b"[3]Hi", 128001]
    assert f.tokens.dtype == np.int64 and f.mask.dtype == bool
    assert f.tokens.shape == (len(ids), K + 1)
    np.testing.assert_array_equal(f.tokens[:, K], ids)
    assert not f.tokens[:, :K].any()
    np.testing.assert_array_equal(f.mask, np.arange(K + 1)[None, :].repeat(len(ids), 0) == K)


def test_audio_frames_are_codes_plus_an_all_zero_eos_frame():
    codes = np.arange(1, 1 + K * 3).reshape(K, 3)  # [K, T]
    f = audio_frames(codes, CFG)
    assert len(f) == 4
    np.testing.assert_array_equal(f.tokens[:3, :K], codes.T)
    assert not f.tokens[3].any() and not f.tokens[:, K].any()
    assert f.mask[:, :K].all() and not f.mask[:, K].any()


def test_segment_frames_text_then_audio_prefer_codes_else_encode():
    codes = np.full((K, 2), 5)
    seg = Segment(1, "Yo", audio=np.ones(3000, np.float32), codes=codes)
    f = segment_frames(seg, FakeTokenizer(), None, CFG)  # codes given: no codec needed
    text = text_frames(FakeTokenizer(), 1, "Yo", CFG)
    np.testing.assert_array_equal(f.tokens[: len(text)], text.tokens)
    np.testing.assert_array_equal(f.tokens[len(text) :], audio_frames(codes, CFG).tokens)
    codec = FakeCodec()
    g = segment_frames(Segment(1, "Yo", audio=np.ones(3000, np.float32)), FakeTokenizer(), codec, CFG)
    want = audio_frames(codec.encode(np.ones(3000, np.float32), K), CFG)
    assert len(g) == len(text) + 2 + 1  # ceil(3000 / 1920) frames + EOS
    np.testing.assert_array_equal(g.tokens[len(text) :], want.tokens)


def test_prompt_assembly_reproduces_the_oracle_prompt():
    """Two context segments (text + codes) then the target give the fixture's tokens and mask."""
    o = load_oracle()
    tz, context, target = oracle_request(o)
    assert len(context) == 2
    parts = [segment_frames(s, tz, None, CFG) for s in context] + [text_frames(tz, 0, target, CFG)]
    prompt = PromptFrames.concat(parts)
    np.testing.assert_array_equal(prompt.tokens, o["tokens"][0])
    np.testing.assert_array_equal(prompt.mask, o["mask"][0])


@pytest.mark.parametrize("bad", [-1, 1.5, "0", None, True])
def test_speaker_must_be_a_non_negative_integer(bad):
    with pytest.raises((TypeError, ValueError), match="non-negative integer"):
        check_speaker(bad)
    with pytest.raises((TypeError, ValueError), match="non-negative integer"):
        text_frames(FakeTokenizer(), bad, "hi", CFG)


def test_numpy_integer_speaker_is_accepted():
    assert check_speaker(np.int64(4)) == 4 and type(check_speaker(np.int64(4))) is int


def test_context_segment_without_audio_is_a_clear_error():
    with pytest.raises(ValueError, match="neither audio nor codes"):
        segment_frames(Segment(0, "only text"), FakeTokenizer(), FakeCodec(), CFG, where="context[2]")
    with pytest.raises(ValueError, match="no codec"):
        segment_frames(Segment(0, "x", audio=np.zeros(10, np.float32)), FakeTokenizer(), None, CFG)
    with pytest.raises(TypeError, match="Segment"):
        segment_frames(("0", "x"), FakeTokenizer(), None, CFG)


def test_bad_codes_are_clear_errors():
    with pytest.raises(ValueError, match=r"context\[0\].*\[32, T\]"):
        segment_frames(Segment(0, "x", codes=np.zeros((8, 3), np.int64)), FakeTokenizer(), None, CFG, "context[0]")
    with pytest.raises(ValueError, match=r"\[0, 2051\)"):
        audio_frames(np.full((K, 2), 2051), CFG)
    with pytest.raises(ValueError, match=r"\[0, 2051\)"):
        audio_frames(np.full((K, 2), -1), CFG)


def test_tokenizer_ids_outside_the_model_vocabulary_are_rejected():
    class Big(FakeTokenizer):
        def encode(self, text, **kw):
            return [1, 200_000]

    with pytest.raises(ValueError, match="200000.*do not match"):
        text_frames(Big(), 0, "x", CFG)


def _frames(n: int) -> PromptFrames:
    t = np.full((n, K + 1), n, np.int64)
    return PromptFrames(t, np.ones_like(t, bool))


def test_max_prompt_frames_is_the_official_rule():
    # Official: max_gen = int(90000 / 80) = 1125; prompt_len >= 2048 - 1125 = 923 raises.
    assert max_prompt_frames(2048, 1125) == 922


def test_fit_prompt_drops_oldest_whole_segments():
    ctx = [_frames(10), _frames(20), _frames(30)]
    assert fit_prompt(ctx, _frames(5), 65) == [0, 1, 2]  # 65 fits exactly
    assert fit_prompt(ctx, _frames(5), 64) == [1, 2]
    assert fit_prompt(ctx, _frames(5), 40) == [2]  # dropping 0 and 1 leaves 35
    assert fit_prompt(ctx, _frames(5), 34) == []
    assert fit_prompt(ctx, _frames(5), 40, drop_order=[2, 1, 0]) == [0, 1]  # 15: newest first
    with pytest.raises(ValueError, match="permutation"):
        fit_prompt(ctx, _frames(5), 40, drop_order=[0, 0, 1])


def test_fit_prompt_never_cuts_the_target():
    with pytest.raises(ContextOverflowError, match="takes 50 prompt frames but at most 49"):
        fit_prompt([_frames(3)], _frames(50), 49)


def test_left_pad_marks_padding_with_all_false_mask_rows():
    a, b = _frames(2), _frames(5)
    tokens, mask = left_pad([a, b])
    assert tokens.shape == (2, 5, K + 1)
    assert not mask[0, :3].any() and not tokens[0, :3].any()
    np.testing.assert_array_equal(tokens[0, 3:], a.tokens)
    np.testing.assert_array_equal(tokens[1], b.tokens)
    assert mask[1].all()


def test_held_rows_find_the_shared_prefix_of_a_new_prompt():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 2048, (2, 6, 5))
    mask = rng.random((2, 6, 5)) < 0.5
    held = HeldRows(2, 16, 5)
    held.record(0, tokens[:, :4], mask[:, :4])
    held.record(4, tokens[:, 4:], mask[:, 4:])
    assert held.shared_prefix(tokens, mask, filled=6) == 5  # the last row always runs
    longer_t = np.concatenate([tokens, tokens[:, :3]], 1)
    longer_m = np.concatenate([mask, mask[:, :3]], 1)
    assert held.shared_prefix(longer_t, longer_m, filled=6) == 6
    assert held.shared_prefix(longer_t, longer_m, filled=2) == 2  # only what the cache still holds
    changed = longer_t.copy()
    changed[1, 3, 0] += 1  # a token of row 1 differs at position 3
    assert held.shared_prefix(changed, longer_m, filled=6) == 3
    flipped = longer_m.copy()
    flipped[0, 1, 2] = ~flipped[0, 1, 2]  # the mask counts too
    assert held.shared_prefix(longer_t, flipped, filled=6) == 1
    assert held.shared_prefix(tokens[:, :1], mask[:, :1], filled=6) == 0
