"""Splitting long text into sentences for generation one sentence at a time.

CSM speaks one prompt's text in one breath of at most `max_audio_ms`; long input sounds better (and
fits the 2048-position window) when generated sentence by sentence, each with the previous
sentences as context. The rules are deliberately simple and language-light:

- a sentence ends after `.`, `!`, `?`, `…` (or their CJK forms `。！？`), optionally followed by
  closing quotes/brackets, where whitespace or the end of the text follows (so "3.14" and "e.g.x"
  stay whole; CJK enders need no space);
- a line break that ends a non-empty line ends a sentence too (headings, list items);
- a few common English abbreviations ("Mr.", "Dr.", "e.g.", ...) do not end a sentence;
- a piece with no letter or digit (stray "..." or "!!") is glued to the sentence before it
  (or after it, at the start);
- a sentence longer than `max_chars` is cut at the last clause mark (, ; :) or space before the limit.
"""

from __future__ import annotations

import re

__all__ = ["split_sentences", "has_speakable_text"]

_END = r"[.!?…]+[\"'”’)\]]*(?=\s|$)|[。！？]+[\"'”’)\]」』]*"
_SENTENCE_END = re.compile(_END)
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st vs etc e.g i.e no fig approx dept est inc ltd co".split()
)


def has_speakable_text(text: str) -> bool:
    """True when `text` holds at least one letter or digit (any script)."""
    return any(ch.isalnum() for ch in text)


def split_sentences(text: str, max_chars: int = 400) -> list[str]:
    """Sentences of `text`, in order, stripped; [] when nothing speakable is left."""
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    pieces: list[str] = []
    for line in text.splitlines():
        pieces.extend(_split_line(line))
    sentences: list[str] = []
    lead = ""  # punctuation before the first sentence joins it
    for piece in pieces:
        if has_speakable_text(piece):
            sentences.append(f"{lead} {piece}".strip())
            lead = ""
        elif sentences:
            sentences[-1] = f"{sentences[-1]} {piece}"  # "Wait ... !" keeps its punctuation
        else:
            lead = f"{lead} {piece}".strip()
    return [part for s in sentences for part in _cut_long(s, max_chars)]


def _split_line(line: str) -> list[str]:
    out: list[str] = []
    start = 0
    for m in _SENTENCE_END.finditer(line):
        words = line[start : m.start()].split()
        if m.group().startswith(".") and words and words[-1].lower().rstrip(".") in _ABBREVIATIONS:
            continue  # "Dr. Smith": not an end
        out.append(line[start : m.end()].strip())
        start = m.end()
    out.append(line[start:].strip())
    return [p for p in out if p]


def _cut_long(sentence: str, max_chars: int) -> list[str]:
    parts: list[str] = []
    while len(sentence) > max_chars:
        head = sentence[:max_chars]
        cut = max(head.rfind(c) for c in ",;:")
        if cut <= 0:
            cut = head.rfind(" ")
        if cut <= 0:
            cut = max_chars - 1  # no break point at all: hard cut
        parts.append(sentence[: cut + 1].strip())
        sentence = sentence[cut + 1 :].strip()
    if sentence:
        parts.append(sentence)
    return parts
