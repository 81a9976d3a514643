"""Read a Hugging Face `tokenizer.json` (byte-level BPE, as shipped with Llama 3 and sesame/csm-1b)
into tiktoken ranks, exactly.

Why this is exact: a byte-level BPE written by transformers' tiktoken conversion stores every
token as a string over the GPT-2 byte alphabet (each byte ↦ one printable character), with
id = tiktoken rank, and lists as merges every split of every token into two tokens, sorted by the
rank of the result. Hugging Face then merges the pair with the lowest merge index, and tiktoken
the pair whose result has the lowest rank: the same choice. We verify each of those properties
and refuse a file that breaks one, rather than tokenizing it slightly differently.
"""

from __future__ import annotations

import json
import operator
import reprlib
import os
from itertools import repeat
from pathlib import Path
from typing import Any

from ._gc import gc_paused
from .bpe import BytePairTokenizer
from .errors import TokenizerFileError
from .llama3 import BEGIN_OF_TEXT, END_OF_TEXT, LLAMA3_PATTERN

__all__ = ["bytes_to_unicode", "load_hf_tokenizer_json", "ranks_from_vocab_merges"]

# Bounds that keep a hostile file from costing unbounded time (every cut of every token is
# checked: quadratic in a token's length) or memory (ids index tables). Llama 3: 128,256 ids,
# tokens of at most 128 bytes.
MAX_TOKEN_ID = 1 << 24
MAX_TOKEN_CHARS = 1024


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte → printable character map used by byte-level BPE vocabularies.

    Printable Latin-1 bytes map to themselves; the other 68 bytes (controls, space, 0x7f-0xa0,
    0xad) map in byte order to U+0100, U+0101, ...
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


_UNICODE_TO_BYTE = {c: b for b, c in bytes_to_unicode().items()}
# str.translate table: alphabet character → the Latin-1 character of its byte; any other character
# below U+0100 (e.g. a raw space, which the alphabet writes as 'Ġ') → U+FFFF, which then fails the
# Latin-1 encode, so foreign characters cannot slip through.
_TO_LATIN1 = {ord(c): b for c, b in _UNICODE_TO_BYTE.items()} | {
    c: 0xFFFF for c in range(256) if chr(c) not in _UNICODE_TO_BYTE
}


def _vocab_bytes(tokens: list[str], path: Path) -> list[bytes]:
    """Byte-level token strings → token bytes (one translate + encode over all of them)."""
    try:
        data = "".join(tokens).translate(_TO_LATIN1).encode("latin-1")
    except UnicodeEncodeError:
        bad = next(t for t in tokens if any(c not in _UNICODE_TO_BYTE for c in t))
        char = next(c for c in bad if c not in _UNICODE_TO_BYTE)
        raise TokenizerFileError(
            f"{path}: token {bad!r} has character {char!r} outside the byte-level alphabet; "
            "not a byte-level BPE vocabulary"
        ) from None
    out, pos = [], 0
    for t in tokens:  # one character per byte, so string lengths are byte lengths
        out.append(data[pos : pos + len(t)])
        pos += len(t)
    return out


def _merge_pairs(merges: Any, path: Path) -> tuple[list[str], list[str]]:
    """Merges as two lists (left parts, right parts). tokenizers < 0.20 writes "left right",
    newer versions write ["left", "right"]."""
    if not isinstance(merges, list):
        raise TokenizerFileError(f"{path}: model.merges must be a list")
    if not merges:
        return [], []
    if isinstance(merges[0], str):
        pairs = [m.split(" ") if isinstance(m, str) else m for m in merges]
    else:
        pairs = merges
    # zip(*pairs) alone would silently drop a third element, so check every length first.
    if all(isinstance(p, list) for p in pairs) and set(map(len, pairs)) == {2}:
        lefts, rights = zip(*pairs)
        return list(lefts), list(rights)
    bad = next(m for m, p in zip(merges, pairs) if not (isinstance(p, list) and len(p) == 2))
    raise TokenizerFileError(f"{path}: malformed merge {bad!r}; expected 'left right' or [left, right]")


def _split_keys(vocab: dict[str, int], shift: int) -> set[int]:
    """Every way to cut a token in two tokens, as id * shift + length of the left part."""
    known = vocab.__contains__
    return {
        tid * shift + i for t, tid in vocab.items() for i in range(1, len(t)) if known(t[:i]) and known(t[i:])
    }


def ranks_from_vocab_merges(vocab: dict[str, int], merges: list[Any], path: Path) -> dict[bytes, int]:
    """Byte-level vocab (str → id) + merges → tiktoken ranks (bytes → rank = id), verified.

    tiktoken merges ANY two adjacent tokens whose concatenation is a token, lowest id first. So the
    merges must be exactly the set of all such cuts (no more, no fewer, no repeats), in id order.
    """
    if not all(type(i) is int and 0 <= i < MAX_TOKEN_ID for i in vocab.values()) or len(set(vocab.values())) != len(vocab):
        raise TokenizerFileError(f"{path}: model.vocab ids must be distinct integers in [0, {MAX_TOKEN_ID})")
    longest = max(vocab, key=len)
    if len(longest) > MAX_TOKEN_CHARS:
        raise TokenizerFileError(
            f"{path}: token {longest[:40]!r}... has {len(longest)} characters; at most {MAX_TOKEN_CHARS}"
        )
    lefts, rights = _merge_pairs(merges, path)
    try:
        results = [vocab.get(a + b, -1) for a, b in zip(lefts, rights)]
    except TypeError:  # e.g. [["a", 1]] or [[["a"], ["b"]]]
        bad = next(m for m, a, b in zip(merges, lefts, rights) if not (isinstance(a, str) and isinstance(b, str)))
        raise TokenizerFileError(
            f"{path}: malformed merge {bad!r}; expected 'left right' or [left, right]"
        ) from None

    def merge_error(k: int, problem: str) -> TokenizerFileError:
        return TokenizerFileError(f"{path}: merge #{k} ({lefts[k]!r}, {rights[k]!r}) {problem}")

    if results and min(results) < 0:
        k = results.index(-1)
        raise merge_error(k, f"makes {lefts[k] + rights[k]!r}, which is not in the vocabulary")
    if results != sorted(results):
        k = next(k for k in range(1, len(results)) if results[k] < results[k - 1])
        raise merge_error(
            k, f"makes token id {results[k]} after a merge that made id {results[k - 1]}; merges are not in "
            "rank order, so tiktoken ranks cannot reproduce this BPE"
        )
    # A merge is identified by (result id, length of its left part); packed into one int.
    shift = max(map(len, vocab)) + 1
    listed = list(map(operator.add, map(operator.mul, results, repeat(shift)), map(len, lefts)))
    listed_set = set(listed)
    if len(listed_set) != len(listed):
        raise TokenizerFileError(f"{path}: {len(listed) - len(listed_set)} duplicate merges")
    valid = _split_keys(vocab, shift)
    if listed_set != valid:
        extra = listed_set - valid
        if extra:
            k = next(k for k, key in enumerate(listed) if key in extra)
            missing = next(t for t in (lefts[k], rights[k]) if t not in vocab)
            raise merge_error(k, f"uses {missing!r}, which is not in the vocabulary")
        tid, i = divmod(min(valid - listed_set), shift)
        token = next(t for t, j in vocab.items() if j == tid)
        raise TokenizerFileError(
            f"{path}: {len(valid - listed_set):,} splits of tokens into two tokens are not merges "
            f"(e.g. {token[:i]!r} + {token[i:]!r}); a BPE that omits some merges cannot be run exactly "
            "by tiktoken ranks"
        )
    tokens = list(vocab)
    ranks = dict(zip(_vocab_bytes(tokens, path), map(vocab.__getitem__, tokens)))
    if len(ranks) != len(vocab):
        raise TokenizerFileError(f"{path}: two vocabulary entries map to the same bytes")
    return ranks


def _pre_tokenizer_pattern(pre: Any, path: Path) -> str:
    """The split regex of the Llama-3 style pre-tokenizer: Split(regex, Isolated) then ByteLevel
    without its own regex and without a prefix space; the regex must be Llama 3's."""
    steps = pre.get("pretokenizers", []) if isinstance(pre, dict) and pre.get("type") == "Sequence" else [pre]
    steps = steps if isinstance(steps, list) else [steps]
    kinds = [s.get("type") if isinstance(s, dict) else None for s in steps]
    if kinds != ["Split", "ByteLevel"]:
        raise TokenizerFileError(
            f"{path}: pre_tokenizer is {kinds}; supported: Sequence[Split(regex), ByteLevel] (the Llama-3 layout)"
        )
    split, byte_level = steps
    pattern = split.get("pattern")
    pattern = pattern.get("Regex") if isinstance(pattern, dict) else None
    if not isinstance(pattern, str) or not pattern or split.get("behavior") != "Isolated" or split.get("invert"):
        raise TokenizerFileError(f"{path}: Split pre-tokenizer must be a Regex with behavior Isolated, invert false")
    if byte_level.get("add_prefix_space") or byte_level.get("use_regex", True):
        raise TokenizerFileError(f"{path}: ByteLevel pre-tokenizer must have add_prefix_space=false, use_regex=false")
    if pattern != LLAMA3_PATTERN:
        # tiktoken runs the regex in Rust and panics (an uncatchable PanicException) on a pattern
        # that can match the empty string or exceeds its backtracking limit: only the pattern this
        # reader is made for is run
        raise TokenizerFileError(f"{path}: Split regex {reprlib.repr(pattern)} is not the Llama-3 pre-tokenizer pattern")
    return pattern


def load_hf_tokenizer_json(
    path: str | os.PathLike, *, bos_token: str = BEGIN_OF_TEXT, eos_token: str = END_OF_TEXT
) -> BytePairTokenizer:
    """A byte-level BPE `tokenizer.json` (Llama 3 / sesame/csm-1b) → BytePairTokenizer.

    Special-token names come from the file's `added_tokens`; bos/eos are found by name.
    """
    with gc_paused():
        return _load(Path(path), bos_token, eos_token)


def _load(path: Path, bos_token: str, eos_token: str) -> BytePairTokenizer:
    try:
        with path.open("rb") as f:
            spec = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"tokenizer file not found: {path}") from None
    except (ValueError, RecursionError) as e:  # bad UTF-8 or JSON, a 5000-digit number, nesting too deep
        raise TokenizerFileError(f"{path}: not valid JSON ({type(e).__name__}: {e}); file damaged or truncated?") from None
    model = spec.get("model") if isinstance(spec, dict) else None
    if not isinstance(model, dict) or model.get("type", "BPE") != "BPE" or "merges" not in model:
        raise TokenizerFileError(f"{path}: not a BPE tokenizer.json (model.type must be 'BPE' with vocab and merges)")
    if model.get("byte_fallback"):
        raise TokenizerFileError(f"{path}: model.byte_fallback=true is not supported (byte-level BPE needs none)")
    for key in ("continuing_subword_prefix", "end_of_word_suffix", "dropout"):
        if model.get(key):
            raise TokenizerFileError(f"{path}: model.{key}={model[key]!r} is not supported (expected null)")
    if not model.get("ignore_merges", False):
        # tiktoken returns a piece that is itself a token without merging; HF does so only here.
        raise TokenizerFileError(f"{path}: model.ignore_merges must be true (as in Llama 3) to match tiktoken")
    normalizer = spec.get("normalizer")
    if normalizer is not None:
        kind = normalizer.get("type") if isinstance(normalizer, dict) else type(normalizer).__name__
        raise TokenizerFileError(f"{path}: a normalizer ({reprlib.repr(kind)}) is not supported")
    pattern = _pre_tokenizer_pattern(spec.get("pre_tokenizer"), path)
    vocab = model.get("vocab")
    if not isinstance(vocab, dict) or not vocab:
        raise TokenizerFileError(f"{path}: model.vocab is missing or empty")
    ranks = ranks_from_vocab_merges(vocab, model["merges"], path)

    special: dict[str, int] = {}
    always: list[str] = []
    rank_ids = set(ranks.values())
    added = spec.get("added_tokens") or []
    if not isinstance(added, list):
        raise TokenizerFileError(f"{path}: added_tokens must be a list, got {type(added).__name__}")
    for entry in added:
        content, tid = (entry.get("content"), entry.get("id")) if isinstance(entry, dict) else (None, None)
        if not isinstance(content, str) or type(tid) is not int or not 0 <= tid < MAX_TOKEN_ID:
            raise TokenizerFileError(
                f"{path}: malformed added token {reprlib.repr(entry)}; expected content and an id in [0, {MAX_TOKEN_ID})"
            )
        if any(entry.get(flag) for flag in ("lstrip", "rstrip", "single_word")):
            raise TokenizerFileError(f"{path}: added token {content!r} uses lstrip/rstrip/single_word, not supported")
        if tid in rank_ids:
            if vocab.get(content) == tid:
                continue  # an added token that is also an ordinary token: nothing to add
            raise TokenizerFileError(f"{path}: added token {content!r} reuses id {tid} of another token")
        if tid in special.values():
            raise TokenizerFileError(f"{path}: added token {content!r} reuses id {tid} of another added token")
        special[content] = tid
        if not entry.get("special", False):
            always.append(content)
    name = "llama3" if pattern == LLAMA3_PATTERN and len(ranks) == 128_000 else "bpe"
    return BytePairTokenizer(
        name, ranks, special, pattern, bos_token=bos_token, eos_token=eos_token, always_matched=always, source=str(path)
    )
