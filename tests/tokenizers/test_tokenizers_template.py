"""The CSM prompt template `[speaker]text` with bos/eos, and the `csm tokenize` helper."""

from __future__ import annotations

import pytest

from csm_tokenizers import cli_tokenize, encode_turn, format_turn


class RecordingTokenizer:
    """Stands in for any TextTokenizer: records what encode_turn asks for."""

    bos_id, eos_id, vocab_size = 1, 2, 10

    def __init__(self):
        self.calls = []

    def encode(self, text, *, bos=False, eos=False, allow_special=False):
        self.calls.append((text, bos, eos, allow_special))
        return [1, 5, 2]

    def decode(self, ids):
        return ""

    def token_to_id(self, token):
        return 0


def test_format_turn():
    assert format_turn(0, "Hello from Sesame.") == "[0]Hello from Sesame."
    assert format_turn("12", "") == "[12]"
    for bad in (-1, True, 1.0, "a", "[0]", None):
        with pytest.raises(ValueError, match="speaker must be a non-negative integer"):
            format_turn(bad, "x")
    with pytest.raises(TypeError, match="text must be str"):
        format_turn(0, b"x")


def test_encode_turn_asks_for_bos_eos_and_no_specials():
    tok = RecordingTokenizer()
    assert encode_turn(tok, 3, "<|end_of_text|>hi") == [1, 5, 2]
    assert tok.calls == [("[3]<|end_of_text|>hi", True, True, False)]


def test_cli_tokenize(llama3_path):
    assert cli_tokenize(llama3_path, "Hello from Sesame.", speaker=0) == [
        128000, 58, 15, 60, 9906, 505, 64027, 373, 13, 128001
    ]
    assert cli_tokenize(llama3_path, "<|eot_id|>.", bos=True, allow_special=True) == [128000, 128009, 13]
