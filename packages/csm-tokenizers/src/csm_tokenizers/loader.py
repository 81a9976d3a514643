"""`load_tokenizer(path)`: pick the reader from the file's content, not its name."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from .bpe import BytePairTokenizer
from .errors import TokenizerFileError
from .hf_json import load_hf_tokenizer_json
from .llama3 import load_llama3_tiktoken, looks_like_tiktoken
from .sentencepiece_tokenizer import SentencePieceTokenizer

__all__ = ["load_tokenizer", "detect_format", "TOKENIZER_FILENAMES"]

Tokenizer = Union[BytePairTokenizer, SentencePieceTokenizer]

# Looked for, in this order, when load_tokenizer is given a directory. `tokenizer.model` first: it
# is the original (Meta's tiktoken ranks, or a SentencePiece model) and loads fastest.
TOKENIZER_FILENAMES = ("tokenizer.model", "tokenizer.json")


def detect_format(path: str | os.PathLike) -> str:
    """'tiktoken', 'hf-json' or 'sentencepiece', from the first bytes of the file."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(4096)
    except FileNotFoundError:
        raise FileNotFoundError(f"tokenizer file not found: {path}") from None
    if head.lstrip()[:1] == b"{":
        return "hf-json"
    if looks_like_tiktoken(head):
        return "tiktoken"
    # A SentencePiece ModelProto starts with field 1 (pieces, length-delimited): tag byte 0x0a.
    if head[:1] == b"\x0a":
        return "sentencepiece"
    raise TokenizerFileError(
        f"{path}: not a tokenizer file this package reads (expected a tiktoken-format tokenizer.model, "
        "a Hugging Face tokenizer.json, or a SentencePiece .model)"
    )


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Load a text tokenizer from a file or from a directory holding tokenizer.model / tokenizer.json.

    - tiktoken rank file (Meta's Llama-3 `tokenizer.model`) → Llama-3 BytePairTokenizer
    - Hugging Face `tokenizer.json` (byte-level BPE, e.g. sesame/csm-1b) → BytePairTokenizer
    - SentencePiece `.model` → SentencePieceTokenizer (needs the `sentencepiece` extra)
    """
    path = Path(path)
    if path.is_dir():
        found = next((path / n for n in TOKENIZER_FILENAMES if (path / n).is_file()), None)
        if found is None:
            raise FileNotFoundError(f"{path}: directory has no {' or '.join(TOKENIZER_FILENAMES)}")
        path = found
    kind = detect_format(path)
    if kind == "hf-json":
        return load_hf_tokenizer_json(path)
    if kind == "tiktoken":
        return load_llama3_tiktoken(path)
    return SentencePieceTokenizer(path)
