"""csm_core.text_split: sentence splitting for long-text generation."""

import pytest

from csm_core.text_split import has_speakable_text, split_sentences


@pytest.mark.parametrize(
    "text, want",
    [
        ("Hello there. How are you? I am fine!", ["Hello there.", "How are you?", "I am fine!"]),
        ("Dr. Smith paid $3.14 on 2.5.2024, e.g. today. Ok.", ["Dr. Smith paid $3.14 on 2.5.2024, e.g. today.", "Ok."]),
        ('"Quote." He said. (Yes.) No', ['"Quote."', "He said.", "(Yes.)", "No"]),
        ("Wait... what?! Really…", ["Wait...", "what?!", "Really…"]),
        ("你好。我很好！谢谢", ["你好。", "我很好！", "谢谢"]),
        ("Title\n\n- first item\nSecond line. End", ["Title", "- first item", "Second line.", "End"]),
        ("no punctuation at all", ["no punctuation at all"]),
    ],
)
def test_split_sentences(text, want):
    assert split_sentences(text) == want


def test_punctuation_only_pieces_join_a_neighbour():
    assert split_sentences("... Hello. ... !") == ["... Hello. ... !"]
    assert split_sentences("Yes. !!! No.") == ["Yes. !!!", "No."]


@pytest.mark.parametrize("text", ["", "   ", "...", "?! .", "\n\n"])
def test_nothing_speakable_gives_no_sentences(text):
    assert split_sentences(text) == [] and not has_speakable_text(text)


def test_long_sentences_are_cut_at_clauses_then_spaces_then_hard():
    s = "alpha beta, gamma delta; epsilon zeta eta theta iota"
    assert split_sentences(s, max_chars=25) == ["alpha beta, gamma delta;", "epsilon zeta eta theta", "iota"]
    assert split_sentences("x" * 25, max_chars=10) == ["x" * 10, "x" * 10, "x" * 5]
    assert all(len(p) <= 40 for p in split_sentences(" ".join(["word"] * 200), max_chars=40))
    with pytest.raises(ValueError, match="max_chars"):
        split_sentences("hi", max_chars=0)


def test_splitting_keeps_every_word_in_order():
    text = "One, two. Three? Four!\nFive six... seven. " * 20
    assert " ".join(split_sentences(text, max_chars=30)).split() == text.split()
