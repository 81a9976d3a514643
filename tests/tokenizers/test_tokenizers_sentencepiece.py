"""SentencePiece models trained here (BPE and unigram): ids equal the library's, bos/eos, control
pieces, decoding, and the missing-extra error."""

from __future__ import annotations

import io
import sys

import pytest
from csm_core.protocols import TextTokenizer

from csm_tokenizers import MissingExtraError, SentencePieceTokenizer, TokenizerFileError, load_tokenizer

spm = pytest.importorskip("sentencepiece")

TRAIN_TEXT = [
    "The quick brown fox jumps over the lazy dog. It wasn't the first time; it won't be the last.",
    "Sesame's Conversational Speech Model generates audio codes from text and audio inputs.",
    "    return x ** 2  # indented code, numbers 1234567890, and punctuation!?",
    "Café naïve façade; Русский текст; Ελληνικά κείμενα.",
] * 100


@pytest.fixture(scope="module", params=["bpe", "unigram"])
def sp_model(request, tmp_path_factory):
    """(path to a .model trained offline, the library's own processor for it)."""
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TRAIN_TEXT), model_writer=out, model_type=request.param, vocab_size=500,
        byte_fallback=True, character_coverage=1.0, control_symbols=["<ctl>"], hard_vocab_limit=False,
        minloglevel=2,
    )
    path = tmp_path_factory.mktemp(f"spm_{request.param}") / "tokenizer.model"
    path.write_bytes(out.getvalue())
    return path, spm.SentencePieceProcessor(model_file=str(path))


def test_ids_equal_library(sp_model, corpus):
    path, ref = sp_model
    tok = load_tokenizer(path)
    assert isinstance(tok, SentencePieceTokenizer) and isinstance(tok, TextTokenizer)
    assert (tok.bos_id, tok.eos_id, tok.vocab_size) == (ref.bos_id(), ref.eos_id(), ref.get_piece_size())
    for text in corpus:
        ids = tok.encode(text, bos=True, eos=True)
        assert ids == ref.encode(text, out_type=int, add_bos=True, add_eos=True), text[:80]
        assert tok.decode(ids) == ref.decode(ids)


def test_round_trip_with_byte_fallback(sp_model):
    tok = load_tokenizer(sp_model[0])
    for text in ["Hello world.", "你好 🦙 unseen characters", "Café naïve"]:
        assert tok.decode(tok.encode(text)) == text
        assert tok.decode(tok.encode(text), errors="strict") == text


def test_control_pieces_are_text_unless_allowed(sp_model):
    path, ref = sp_model
    tok = load_tokenizer(path)
    assert tok.special_tokens == {"<s>": 1, "</s>": 2, "<ctl>": 3}
    text = "stop</s> here<ctl>"
    assert tok.encode(text) == ref.encode(text, out_type=int)
    assert 2 not in tok.encode(text) and 3 not in tok.encode(text)
    allowed = tok.encode(text, allow_special=True)
    expected = ref.encode("stop", out_type=int) + [2] + ref.encode(" here", out_type=int) + [3]
    assert allowed == expected
    assert tok.token_to_id("</s>") == 2 and tok.token_to_id("<ctl>") == 3
    with pytest.raises(KeyError, match="not a piece"):
        tok.token_to_id("no such piece")


def test_decode_invalid_utf8(sp_model):
    tok = load_tokenizer(sp_model[0])
    ids = tok.encode("a🦙")  # the emoji is unseen: four byte-fallback pieces
    byte_ids = [i for i in ids if tok._sp.is_byte(i)]
    assert len(byte_ids) == 4
    cut = ids[: ids.index(byte_ids[1]) + 1]
    assert tok.decode(cut).endswith("\ufffd")
    with pytest.raises(UnicodeDecodeError, match=rf"token #{ids.index(byte_ids[0])} \(id {byte_ids[0]}\)"):
        tok.decode(cut, errors="strict")


def test_bad_input(sp_model):
    tok = load_tokenizer(sp_model[0])
    n = tok.vocab_size
    with pytest.raises(ValueError, match=rf"token id {n} at position 1 is out of range \[0, {n}\)"):
        tok.decode([0, n])
    with pytest.raises(TypeError, match="text must be str"):
        tok.encode(42)


def test_model_without_bos(tmp_path):
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(TRAIN_TEXT), model_writer=out, vocab_size=100,
                                   bos_id=-1, minloglevel=2)
    path = tmp_path / "nobos.model"
    path.write_bytes(out.getvalue())
    tok = load_tokenizer(path)
    assert tok.bos_id == -1
    with pytest.raises(ValueError, match="no bos piece"):
        tok.encode("hi", bos=True)


def test_truncated_model(sp_model, tmp_path):
    data = sp_model[0].read_bytes()
    path = tmp_path / "cut.model"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TokenizerFileError, match="cut.model: not a readable SentencePiece model"):
        load_tokenizer(path)


def test_missing_extra_names_it(sp_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "sentencepiece", None)  # makes `import sentencepiece` fail
    with pytest.raises(MissingExtraError, match=r'pip install "csm-tokenizers\[sentencepiece\]"'):
        load_tokenizer(sp_model[0])
