"""The CSM text prompt: one turn is `[speaker]text` between begin- and end-of-text.

Matches the official generator (`TemplateProcessing("bos $A eos")` over f"[{speaker}]{text}") and
the Hugging Face CSM processor. Each id becomes one text frame of the prompt (csm_core.prompt).
"""

from __future__ import annotations

from numbers import Integral

from csm_core.protocols import TextTokenizer

__all__ = ["format_turn", "encode_turn"]


def format_turn(speaker: int | str, text: str) -> str:
    """`[speaker]text`. The speaker is a non-negative integer (or its decimal string)."""
    if isinstance(speaker, str) and speaker.isdecimal():
        speaker = int(speaker)
    if isinstance(speaker, bool) or not isinstance(speaker, Integral) or speaker < 0:
        raise ValueError(f"speaker must be a non-negative integer, got {speaker!r}")
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    return f"[{int(speaker)}]{text}"


def encode_turn(tokenizer: TextTokenizer, speaker: int | str, text: str) -> list[int]:
    """Ids of one turn: bos, `[speaker]text`, eos. Special tokens spelled in `text` stay text.

    >>> encode_turn(llama3, 0, "Hello from Sesame.")
    [128000, 58, 15, 60, 9906, 505, 64027, 373, 13, 128001]
    """
    return tokenizer.encode(format_turn(speaker, text), bos=True, eos=True, allow_special=False)
