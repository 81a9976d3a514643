"""Llama-3 vocabulary: pre-tokenizer regex, special tokens, and the tiktoken-format file.

`tokenizer.model` (meta-llama/llama-models) holds 128,000 lines `base64(token bytes) rank`, rank =
id = merge priority. The 256 special tokens follow at ids 128000..128255 (spec/tokenizer.md §3).
"""

from __future__ import annotations

import base64
import binascii
import os
import sys
from functools import partial
from pathlib import Path
from typing import NoReturn

from ._gc import gc_paused
from .bpe import BytePairTokenizer
from .errors import TokenizerFileError

__all__ = [
    "LLAMA3_PATTERN",
    "LLAMA3_NUM_BASE_TOKENS",
    "BEGIN_OF_TEXT",
    "END_OF_TEXT",
    "llama3_special_tokens",
    "read_tiktoken_ranks",
    "load_llama3_tiktoken",
]

# The exact Llama-3 split (spec/tokenizer.md §2). Needs \p{..} classes: tiktoken's regex engine
# and the `regex` package support them, stdlib `re` does not.
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA3_NUM_BASE_TOKENS = 128_000
LLAMA3_NUM_SPECIAL_TOKENS = 256
BEGIN_OF_TEXT = "<|begin_of_text|>"
END_OF_TEXT = "<|end_of_text|>"

# Names as in meta-llama/llama-models (Llama 3.2); names above id 128001 vary between releases.
_NAMED_SPECIALS = (
    BEGIN_OF_TEXT,
    END_OF_TEXT,
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|step_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
    "<|image|>",
)


def llama3_special_tokens(first_id: int = LLAMA3_NUM_BASE_TOKENS) -> dict[str, int]:
    """The 256 Llama-3 special tokens, name → id (128000 + i)."""
    names = list(_NAMED_SPECIALS)
    names += [f"<|reserved_special_token_{2 + i}|>" for i in range(LLAMA3_NUM_SPECIAL_TOKENS - len(names))]
    return {name: first_id + i for i, name in enumerate(names)}


# Strict base64 (a damaged line must fail, not decode to other bytes); the C-level strict mode is
# Python >= 3.11, b64decode(validate=True) checks with a regex and is about twice as slow.
if sys.version_info >= (3, 11):
    _b64decode = partial(binascii.a2b_base64, strict_mode=True)
else:
    _b64decode = partial(base64.b64decode, validate=True)


def looks_like_tiktoken(head: bytes) -> bool:
    """True when the first line of `head` is `base64 integer` (the tiktoken rank format)."""
    line = head.split(b"\n", 1)[0].rstrip(b"\r")
    parts = line.split(b" ")
    if len(parts) != 2 or not parts[1].isdigit() or not parts[0]:
        return False
    try:
        _b64decode(parts[0])
    except ValueError:  # binascii.Error is a ValueError
        return False
    return True


def read_tiktoken_ranks(path: str | os.PathLike, expected_size: int | None = None) -> dict[bytes, int]:
    """Read a tiktoken rank file → {token bytes: rank}.

    Checks that every line parses, that ranks are exactly 0..n-1 with no duplicate token, and
    (when given) that n == expected_size, so a truncated or damaged file fails loudly.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"tokenizer file not found: {path}") from None
    ranks, n_lines = _parse_ranks_fast(data)
    if ranks is None:
        _raise_parse_error(data, path)
    if len(ranks) != n_lines:
        raise TokenizerFileError(f"{path}: {n_lines - len(ranks)} duplicate tokens; not a valid rank file")
    if expected_size is not None and len(ranks) != expected_size:
        raise TokenizerFileError(
            f"{path}: {len(ranks):,} tokens, expected {expected_size:,}; file truncated or not this vocabulary?"
        )
    return ranks


def _parse_ranks_fast(data: bytes) -> tuple[dict[bytes, int] | None, int]:
    """(ranks, number of lines), parsed with C-level loops only (split, map); ranks is None when
    any line is off, and _raise_parse_error then finds it."""
    fields = data.split()
    n = len(fields) // 2
    if len(fields) != 2 * n or n != len(data.splitlines()):
        return None, n
    try:
        if list(map(int, fields[1::2])) != list(range(n)):
            return None, n
        tokens = map(_b64decode, fields[0::2])
        return dict(zip(tokens, range(n))), n
    except ValueError:
        return None, n


def _raise_parse_error(data: bytes, path: Path) -> NoReturn:
    """Find the first bad line and raise an error naming it."""
    lines = data.splitlines()
    for rank, line in enumerate(lines):
        try:
            token, r = line.split(b" ")
            _b64decode(token)
            if int(r) == rank:
                continue
        except ValueError:
            pass
        if rank == len(lines) - 1 and not data.endswith(b"\n"):
            raise TokenizerFileError(
                f"{path}: last line {rank + 1} is incomplete ({line[:60]!r}); file truncated?"
            )
        raise TokenizerFileError(
            f"{path}: line {rank + 1} is not 'base64-token {rank}' ({line[:60]!r}); file damaged?"
        )
    raise TokenizerFileError(f"{path}: not a tiktoken rank file")


def load_llama3_tiktoken(path: str | os.PathLike) -> BytePairTokenizer:
    """The Llama-3 tokenizer from Meta's tiktoken-format `tokenizer.model`."""
    with gc_paused():
        ranks = read_tiktoken_ranks(path, expected_size=LLAMA3_NUM_BASE_TOKENS)
    return BytePairTokenizer(
        "llama3",
        ranks,
        llama3_special_tokens(len(ranks)),
        LLAMA3_PATTERN,
        bos_token=BEGIN_OF_TEXT,
        eos_token=END_OF_TEXT,
        source=str(path),
    )
