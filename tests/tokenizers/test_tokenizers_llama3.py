"""Llama-3 BPE on Meta's real vocabulary: parity with tiktoken and Hugging Face tokenizers,
round trips, special tokens, decoding and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from csm_core.protocols import TextTokenizer

from csm_tokenizers import BEGIN_OF_TEXT, END_OF_TEXT, encode_turn

SPEC_VECTORS = [  # spec/tokenizer.md §4-5 (llama-models, llama3-tokenizer-js)
    ("This is a test sentence.", [2028, 374, 264, 1296, 11914, 13]),
    ("grabbed", [59312, 2788]),
    ("🦙", [9468, 99, 247]),
]


def test_protocol_and_sizes(llama3):
    assert isinstance(llama3, TextTokenizer)
    assert (llama3.bos_id, llama3.eos_id, llama3.vocab_size) == (128000, 128001, 128256)
    assert llama3.token_to_id(BEGIN_OF_TEXT) == 128000
    assert llama3.token_to_id(END_OF_TEXT) == 128001
    assert llama3.token_to_id("<|eot_id|>") == 128009
    assert llama3.token_to_id("<|reserved_special_token_245|>") == 128255
    assert llama3.token_to_id("Hello") == 9906
    with pytest.raises(KeyError, match="neither a special token"):
        llama3.token_to_id("Hello from")


@pytest.mark.parametrize("text,ids", SPEC_VECTORS)
def test_spec_vectors(llama3, text, ids):
    assert llama3.encode(text) == ids


def test_csm_turn(llama3):
    expected = [128000, 58, 15, 60, 9906, 505, 64027, 373, 13, 128001]
    assert llama3.encode("[0]Hello from Sesame.", bos=True, eos=True) == expected
    assert encode_turn(llama3, 0, "Hello from Sesame.") == expected
    assert llama3.encode("This is a test sentence.", bos=True, eos=True)[-1] == 128001


def test_matches_tiktoken(llama3, tiktoken_reference, corpus):
    for text in corpus:
        assert llama3.encode(text) == tiktoken_reference.encode_ordinary(text), text[:80]


@pytest.mark.reference
def test_matches_hf_tokenizers(llama3, hf_reference, corpus):
    for text in corpus:
        assert llama3.encode(text) == hf_reference.encode(text, add_special_tokens=False).ids, text[:80]


def test_round_trip(llama3, corpus):
    for text in corpus:
        assert llama3.decode(llama3.encode(text)) == text, text[:80]
        assert llama3.decode(llama3.encode(text), errors="strict") == text, text[:80]


def test_special_tokens_in_text_are_text(llama3):
    text = "Say this: <|end_of_text|><|begin_of_text|> done"
    ids = llama3.encode(text)
    assert 128000 not in ids and 128001 not in ids
    assert llama3.decode(ids) == text
    allowed = llama3.encode(text, allow_special=True)
    assert allowed.count(128001) == 1 and allowed.count(128000) == 1
    assert llama3.decode(allowed) == text
    # The CSM turn never lets user text inject a special token.
    turn = encode_turn(llama3, 0, "<|end_of_text|>")
    assert turn.count(128001) == 1 and turn[-1] == 128001


@pytest.mark.reference
def test_allow_special_matches_hf(llama3, hf_reference):
    # HF tokenizers always match added special tokens in text; ours does with allow_special=True.
    for text in ["<|begin_of_text|>Hi<|end_of_text|>", "a<|eot_id|>\n<|start_header_id|>user<|end_header_id|>",
                 "<|reserved_special_token_245|><|reserved_special_token_2|>x <|image|>"]:
        assert llama3.encode(text, allow_special=True) == hf_reference.encode(text, add_special_tokens=False).ids


def test_decode_special_and_numpy_ids(llama3):
    ids = np.array([128000, 9906, 128001], dtype=np.int64)
    assert llama3.decode(ids) == "<|begin_of_text|>Hello<|end_of_text|>"
    assert llama3.decode([]) == ""


def test_decode_invalid_utf8(llama3):
    llama_ids = llama3.encode("🦙")  # 3 tokens: F0 9F | A6 | 99, none valid UTF-8 alone
    assert llama3.decode(llama_ids[:1]) == "\ufffd"
    with pytest.raises(UnicodeDecodeError, match=r"token #1 \(id 9468\)"):
        llama3.decode([40] + llama_ids[:2], errors="strict")
    assert llama3.decode(llama_ids, errors="strict") == "🦙"
    with pytest.raises(ValueError, match="errors must be"):
        llama3.decode(llama_ids, errors="ignore")


def test_bad_input(llama3):
    with pytest.raises(TypeError, match="text must be str, got bytes"):
        llama3.encode(b"bytes")
    with pytest.raises(TypeError, match="text must be str, got NoneType"):
        llama3.encode(None)
    with pytest.raises(ValueError, match="lone surrogate"):
        llama3.encode("bad \ud83d escape")
    with pytest.raises(ValueError, match=r"token id 128256 at position 1 is out of range \[0, 128256\)"):
        llama3.decode([1, 128256])
    with pytest.raises(ValueError, match="token id -1 at position 0"):
        llama3.decode([-1])
    with pytest.raises(TypeError, match="token ids must be integers, got 1.5"):
        llama3.decode([1.5])
    with pytest.raises(TypeError, match="iterable of ints, got str"):
        llama3.decode("123")
