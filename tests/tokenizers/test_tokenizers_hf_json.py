"""Hugging Face tokenizer.json route: same ids as the tokenizer.model route on the real vocabulary,
exact parity with HF `tokenizers` on a vocabulary trained here, and refusal of files whose BPE
tiktoken ranks cannot reproduce."""

from __future__ import annotations

import copy
import json

import pytest

from csm_tokenizers import (
    BEGIN_OF_TEXT,
    END_OF_TEXT,
    LLAMA3_PATTERN,
    TokenizerFileError,
    load_hf_tokenizer_json,
    load_tokenizer,
)
from csm_tokenizers.hf_json import bytes_to_unicode

tokenizers = pytest.importorskip("tokenizers")


@pytest.mark.reference
def test_real_vocab_json_equals_model_route(llama3, llama3_json_path, hf_reference, corpus):
    from_json = load_tokenizer(llama3_json_path)
    assert from_json.name == "llama3"
    assert (from_json.bos_id, from_json.eos_id, from_json.vocab_size) == (128000, 128001, 128256)
    assert from_json.special_tokens == llama3.special_tokens
    for text in corpus:
        assert from_json.encode(text, bos=True, eos=True) == llama3.encode(text, bos=True, eos=True), text[:80]
    assert from_json.encode("[0]Hello from Sesame.", bos=True, eos=True) == [
        128000, 58, 15, 60, 9906, 505, 64027, 373, 13, 128001
    ]


def test_bytes_to_unicode_is_gpt2_alphabet():
    table = bytes_to_unicode()
    assert sorted(table) == list(range(256)) and len(set(table.values())) == 256
    assert (table[ord(" ")], table[ord("\n")], table[ord("A")], table[0xAD]) == ("Ġ", "Ċ", "A", "Ń")
    assert set(table.values()) == set(tokenizers.pre_tokenizers.ByteLevel.alphabet())


# --- a small byte-level BPE trained here, so these tests need no Llama files -------------------

TRAIN_TEXT = [
    "The quick brown fox jumps over the lazy dog. It wasn't the first time; it won't be the last.",
    "Sesame's Conversational Speech Model generates audio codes from text and audio inputs.",
    "    return x ** 2  # indented code, numbers 1234567890, and punctuation!?",
    "Café naïve façade; 你好，世界; 日本語のテキスト; Русский текст; 🦙🔥",
] * 50


def _pre_tokenizer():
    pt = tokenizers.pre_tokenizers
    return pt.Sequence([
        pt.Split(tokenizers.Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pt.ByteLevel(add_prefix_space=False, use_regex=False),
    ])


def _complete_merges(vocab: dict[str, int]) -> list[tuple[str, str]]:
    """Every split of every token into two tokens, by rank of the result (transformers' rule)."""
    merges = []
    for token, rank in vocab.items():
        splits = [(token[:i], token[i:]) for i in range(1, len(token)) if token[:i] in vocab and token[i:] in vocab]
        merges += [(rank, vocab[a], vocab[b], a, b) for a, b in splits]
    return [(a, b) for *_, a, b in sorted(merges)]


def _build(vocab, merges, specials=(BEGIN_OF_TEXT, END_OF_TEXT), extra_plain=()):
    tk = tokenizers.Tokenizer(tokenizers.models.BPE(vocab, merges, ignore_merges=True))
    tk.pre_tokenizer = _pre_tokenizer()
    tk.decoder = tokenizers.decoders.ByteLevel()
    tk.add_special_tokens([tokenizers.AddedToken(s, normalized=False, special=True) for s in specials])
    if extra_plain:
        tk.add_tokens([tokenizers.AddedToken(s, normalized=False, special=False) for s in extra_plain])
    return tk


@pytest.fixture(scope="module")
def trained():
    """(HF Tokenizer with complete merges, its JSON as a dict, the trainer's own JSON dict)."""
    tk = tokenizers.Tokenizer(tokenizers.models.BPE())
    tk.pre_tokenizer = _pre_tokenizer()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tk.train_from_iterator(TRAIN_TEXT, trainer)
    vocab = tk.get_vocab()
    complete = _build(vocab, _complete_merges(vocab), extra_plain=["<custom>"])
    return complete, json.loads(complete.to_str()), json.loads(tk.to_str())


def _write(tmp_path, spec, name="tokenizer.json"):
    path = tmp_path / name
    path.write_text(json.dumps(spec), encoding="utf-8")
    return path


def test_trained_vocab_matches_hf(trained, tmp_path, corpus):
    hf, spec, _ = trained
    ours = load_hf_tokenizer_json(_write(tmp_path, spec))
    assert ours.name == "bpe" and ours.vocab_size == hf.get_vocab_size()
    for text in corpus:
        # "<custom>" is a non-special added token: always matched, as HF does.
        for t in (text, text[:50] + "<custom>" + text[50:]):
            assert ours.encode(t) == hf.encode(t, add_special_tokens=False).ids, t[:80]
            assert ours.decode(ours.encode(t)) == t
    text = f"{BEGIN_OF_TEXT}hi{END_OF_TEXT}"
    assert ours.encode(text, allow_special=True) == hf.encode(text, add_special_tokens=False).ids
    assert ours.bos_id not in ours.encode(text)


def test_legacy_string_merges(trained, tmp_path):
    hf, spec, _ = trained
    legacy = copy.deepcopy(spec)
    legacy["model"]["merges"] = [f"{a} {b}" for a, b in spec["model"]["merges"]]
    ours = load_hf_tokenizer_json(_write(tmp_path, legacy))
    text = "The lazy dog's code: return x ** 2"
    assert ours.encode(text) == hf.encode(text, add_special_tokens=False).ids


def _broken(spec, edit):
    spec = copy.deepcopy(spec)
    edit(spec)
    return spec


def _swap_first_two_ranks(spec):
    merges = spec["model"]["merges"]
    vocab = spec["model"]["vocab"]
    k = next(k for k in range(1, len(merges)) if vocab["".join(merges[k])] > vocab["".join(merges[0])])
    merges[0], merges[k] = merges[k], merges[0]


def _insert_cut_with_unknown_part(spec):
    """Add, in rank order, a merge whose result is a token but whose left part is not."""
    vocab, merges = spec["model"]["vocab"], spec["model"]["merges"]
    token, i = next((t, i) for t in vocab for i in range(2, len(t)) if t[:i] not in vocab and t[i:] in vocab)
    k = next(k for k, m in enumerate(merges) if vocab["".join(m)] > vocab[token])
    merges.insert(k, [token[:i], token[i:]])


BROKEN = {
    "omits some merges": lambda s: s["model"]["merges"].pop(len(s["model"]["merges"]) // 2),
    "not in rank order": _swap_first_two_ranks,
    "makes 'Ġzzzzqq', which is not in the vocabulary": lambda s: s["model"]["merges"].append(["Ġ", "zzzzqq"]),
    "uses '.*', which is not in the vocabulary": _insert_cut_with_unknown_part,
    "duplicate merges": lambda s: s["model"]["merges"].append(list(s["model"]["merges"][-1])),
    "malformed merge": lambda s: s["model"]["merges"].append(["a", "b", "c"]),
    "malformed merge 'Ġ Ġ Ġ'": lambda s: s["model"].__setitem__("merges", ["Ġ Ġ Ġ"]),
    "ids must be distinct integers": lambda s: s["model"]["vocab"].__setitem__("zzz", 0),
    "outside the byte-level alphabet": lambda s: s["model"]["vocab"].__setitem__("a b", 10_000),
    "ignore_merges must be true": lambda s: s["model"].__setitem__("ignore_merges", False),
    "supported: Sequence": lambda s: s.__setitem__("pre_tokenizer", {"type": "ByteLevel", "add_prefix_space": False}),
    "normalizer": lambda s: s.__setitem__("normalizer", {"type": "NFC"}),
    "not a BPE": lambda s: s["model"].__setitem__("type", "WordPiece"),
    "special token '<|begin_of_text|>' not in the vocabulary": lambda s: s.__setitem__("added_tokens", []),
}


@pytest.mark.parametrize("problem", list(BROKEN))
def test_refuses_inexact_or_broken_files(trained, tmp_path, problem):
    path = _write(tmp_path, _broken(trained[1], BROKEN[problem]))
    pattern = problem.replace("(", r"\(").replace("|", r"\|")
    with pytest.raises(TokenizerFileError, match=pattern) as e:
        load_hf_tokenizer_json(path)
    assert str(path) in str(e.value)


def test_trainer_output_without_all_merges_is_refused(trained, tmp_path):
    # The trainer keeps only the merges it made; tiktoken would also merge other splits.
    spec = copy.deepcopy(trained[2])
    spec["model"]["ignore_merges"] = True
    spec["added_tokens"] = trained[1]["added_tokens"]
    with pytest.raises(TokenizerFileError, match="omits some merges"):
        load_hf_tokenizer_json(_write(tmp_path, spec))


def test_truncated_json(trained, tmp_path):
    text = json.dumps(trained[1])
    path = tmp_path / "tokenizer.json"
    path.write_text(text[: len(text) // 2], encoding="utf-8")
    with pytest.raises(TokenizerFileError, match="not valid JSON.*truncated"):
        load_tokenizer(path)
