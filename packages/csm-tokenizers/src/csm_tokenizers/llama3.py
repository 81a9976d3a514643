"""Llama-3 vocabulary: pre-tokenizer regex, special tokens, and the tiktoken-format file.

`tokenizer.model` (meta-llama/llama-models) holds 128,000 lines `base64(token bytes) rank`, rank =
id = merge priority. The 256 special tokens follow at ids 128000..128255 (spec/tokenizer.md §3).
"""

from __future__ import annotations

import binascii
import os
from pathlib import Path

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


def looks_like_tiktoken(head: bytes) -> bool:
    """True when the first line of `head` is `base64 integer` (the tiktoken rank format)."""
    line = head.split(b"\n", 1)[0].rstrip(b"\r")
    parts = line.split(b" ")
    if len(parts) != 2 or not parts[1].isdigit() or not parts[0]:
        return False
    try:
        binascii.a2b_base64(parts[0], strict_mode=True)
    except (binascii.Error, ValueError):
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
    lines = data.splitlines()
    ranks: dict[bytes, int] = {}
    a2b = binascii.a2b_base64
    try:
        for rank, line in enumerate(lines):
            token, r = line.split(b" ")
            if int(r) != rank:
                raise TokenizerFileError(f"{path}: line {rank + 1} has rank {int(r)}, expected {rank} (ranks must be 0..n-1 in order)")
            ranks[a2b(token, strict_mode=True)] = rank
    except (ValueError, binascii.Error) as e:
        if isinstance(e, TokenizerFileError):
            raise
        raise TokenizerFileError(
            f"{path}: line {rank + 1} is not 'base64-token rank' ({line[:60]!r}); file damaged or truncated?"
        ) from None
    if len(ranks) != len(lines):
        raise TokenizerFileError(f"{path}: {len(lines) - len(ranks)} duplicate tokens; not a valid rank file")
    if data and not data.endswith(b"\n"):
        # Every line of a complete file ends in a newline; a cut inside the last line may still parse.
        raise TokenizerFileError(f"{path}: last line has no newline; file truncated?")
    if expected_size is not None and len(ranks) != expected_size:
        raise TokenizerFileError(
            f"{path}: {len(ranks):,} tokens, expected {expected_size:,}; file truncated or not this vocabulary?"
        )
    return ranks


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
