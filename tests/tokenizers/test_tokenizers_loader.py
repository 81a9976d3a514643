"""load_tokenizer: format detection, directories, and clear errors for missing, truncated,
damaged and foreign files."""

from __future__ import annotations

import json

import pytest

from csm_tokenizers import BytePairTokenizer, TokenizerFileError, detect_format, load_tokenizer
from csm_tokenizers.hf_json import bytes_to_unicode
from csm_tokenizers.llama3 import LLAMA3_PATTERN


def _tiny_tokenizer_json() -> dict:
    """A hand-made byte-level BPE tokenizer.json: 256 byte tokens + a few words, every split listed."""
    alphabet = bytes_to_unicode()
    vocab = {alphabet[b]: b for b in range(256)}
    for word in ["he", "ll", "hell", "hello", "Ġw", "or", "Ġwor", "ld", "Ġworld"]:
        vocab[word] = len(vocab)
    merges = sorted(
        (vocab[t], vocab[t[:i]], [t[:i], t[i:]])
        for t in vocab for i in range(1, len(t)) if t[:i] in vocab and t[i:] in vocab
    )
    added = [
        {"id": 300 + i, "content": c, "special": True} for i, c in enumerate(["<|begin_of_text|>", "<|end_of_text|>"])
    ]
    return {
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_PATTERN}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        ]},
        "model": {"type": "BPE", "ignore_merges": True, "vocab": vocab, "merges": [m for *_, m in merges]},
    }


@pytest.fixture
def tiny_json(tmp_path):
    path = tmp_path / "tiny" / "tokenizer.json"
    path.parent.mkdir()
    path.write_text(json.dumps(_tiny_tokenizer_json()), encoding="utf-8")
    return path


def test_tiny_json_directory(tiny_json):
    assert detect_format(tiny_json) == "hf-json"
    tok = load_tokenizer(tiny_json.parent)
    assert isinstance(tok, BytePairTokenizer)
    assert (tok.bos_id, tok.eos_id, tok.vocab_size) == (300, 301, 302)
    # "hello" is one token; " world" one token; "!" its byte.
    assert tok.encode("hello world!", bos=True, eos=True) == [300, 259, 264, 33, 301]
    assert tok.encode("hellish") == [258, ord("i"), ord("s"), ord("h")]
    assert tok.decode(tok.encode("hello wörld")) == "hello wörld"
    # Gap ids (none here) and out-of-range ids fail clearly.
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([302])


def test_real_model_file_and_directory(llama3_path, tmp_path):
    assert detect_format(llama3_path) == "tiktoken"
    (tmp_path / "tokenizer.model").symlink_to(llama3_path)
    tok = load_tokenizer(tmp_path)
    assert tok.name == "llama3" and tok.encode("Hello") == [9906]


def test_missing_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer file not found: .*nope.model"):
        load_tokenizer(tmp_path / "nope.model")
    with pytest.raises(FileNotFoundError, match="directory has no tokenizer.model or tokenizer.json"):
        load_tokenizer(tmp_path)


@pytest.mark.parametrize("content", [b"", b"hello world\n", b"\x89PNG\r\n\x1a\n....", b"# a text file\n1 2 3\n"])
def test_foreign_file(tmp_path, content):
    path = tmp_path / "weird.bin"
    path.write_bytes(content)
    with pytest.raises(TokenizerFileError, match="weird.bin: not a tokenizer file this package reads"):
        load_tokenizer(path)


def _cut(src, tmp_path, n_bytes=None, lines=None):
    data = src.read_bytes()
    if lines is not None:
        data = b"".join(data.splitlines(keepends=True)[:lines])
    else:
        data = data[:n_bytes]
    path = tmp_path / "tokenizer.model"
    path.write_bytes(data)
    return path


def test_truncated_tiktoken_file(llama3_path, tmp_path):
    with pytest.raises(TokenizerFileError, match=r"64,000 tokens, expected 128,000; file truncated"):
        load_tokenizer(_cut(llama3_path, tmp_path, lines=64_000))
    lines = llama3_path.read_bytes().splitlines(keepends=True)
    start = sum(map(len, lines[:1000]))
    for n_bytes in range(start + 1, start + len(lines[1000])):  # every cut inside line 1001
        path = _cut(llama3_path, tmp_path, n_bytes=n_bytes)
        expected = r"tokenizer.model: (last line 1001 is incomplete .*|1,001 tokens, expected 128,000); file truncated"
        with pytest.raises(TokenizerFileError, match=expected):
            load_tokenizer(path)


def test_damaged_tiktoken_file(llama3_path, tmp_path):
    lines = llama3_path.read_bytes().splitlines(keepends=True)
    bad = list(lines)
    bad[10] = b"!!!notbase64 10\n"
    path = tmp_path / "tokenizer.model"
    path.write_bytes(b"".join(bad))
    with pytest.raises(TokenizerFileError, match=r"line 11 is not 'base64-token 10' \(b'!!!notbase64 10'\); file damaged"):
        load_tokenizer(path)
    bad = list(lines)
    bad[5], bad[6] = bad[6], bad[5]
    path.write_bytes(b"".join(bad))
    with pytest.raises(TokenizerFileError, match=r"line 6 is not 'base64-token 5'"):
        load_tokenizer(path)
