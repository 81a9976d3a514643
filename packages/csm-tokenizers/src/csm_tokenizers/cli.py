"""What `csm tokenize` needs: one call from a path and a text to ids."""

from __future__ import annotations

import os

from .loader import load_tokenizer
from .template import encode_turn

__all__ = ["cli_tokenize"]


def cli_tokenize(
    path: str | os.PathLike,
    text: str,
    *,
    speaker: int | None = None,
    bos: bool = False,
    eos: bool = False,
    allow_special: bool = False,
) -> list[int]:
    """Ids of `text` under the tokenizer at `path` (file or directory).

    With `speaker`, encode the CSM turn `[speaker]text` with bos/eos (bos/eos flags then ignored).
    """
    tokenizer = load_tokenizer(path)
    if speaker is not None:
        return encode_turn(tokenizer, speaker, text)
    return tokenizer.encode(text, bos=bos, eos=eos, allow_special=allow_special)
