"""Byte-level BPE tokenizer with tiktoken as the engine.

A vocabulary is `ranks: dict[bytes, int]` (token bytes → id; for byte-level BPE the id is also
the merge priority: tiktoken merges the adjacent pair whose concatenation has the lowest rank)
plus special tokens (name → id) and the pre-tokenizer regex. Both file routes (tiktoken
`tokenizer.model`, Hugging Face `tokenizer.json`) end in `BytePairTokenizer(...)`.
"""

from __future__ import annotations

import operator
from typing import Callable, Iterable, Mapping

import tiktoken

from .errors import TokenizerFileError

__all__ = ["BytePairTokenizer", "check_text", "check_ids"]


def check_text(text: object) -> str:
    """Return `text` if it is a str of valid Unicode, else raise a clear error."""
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        # A lone surrogate (e.g. from a bad '\ud83d' escape): tiktoken would silently turn it into
        # U+FFFD and decode(encode(x)) != x; refuse instead.
        raise ValueError(
            f"text is not valid Unicode: lone surrogate {text[e.start]!r} at index {e.start}"
        ) from None
    return text


def check_ids(ids: Iterable[int], vocab_size: int, missing: frozenset[int] = frozenset()) -> list[int]:
    """Convert `ids` to a list of Python ints in [0, vocab_size) (numpy ints and arrays accepted)."""
    if isinstance(ids, (str, bytes)):
        raise TypeError(f"ids must be an iterable of ints, got {type(ids).__name__}")
    ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)  # numpy: one C-level conversion
    try:
        out = [operator.index(i) for i in ids]
    except TypeError:
        bad = next(i for i in ids if not _is_index(i))
        raise TypeError(f"token ids must be integers, got {bad!r} ({type(bad).__name__})") from None
    if out and (min(out) < 0 or max(out) >= vocab_size):
        pos, bad = next((k, i) for k, i in enumerate(out) if not 0 <= i < vocab_size)
        raise ValueError(f"token id {bad} at position {pos} is out of range [0, {vocab_size})")
    if missing and not missing.isdisjoint(out):
        pos, bad = next((k, i) for k, i in enumerate(out) if i in missing)
        raise ValueError(f"token id {bad} at position {pos} is not in the vocabulary (unused id)")
    return out


def _is_index(x: object) -> bool:
    try:
        operator.index(x)
    except TypeError:
        return False
    return True


def decode_utf8(
    data: bytes, errors: str, ids: list[int], token_length: Callable[[int], int], first_index: int = 0
) -> str:
    """UTF-8 decode of the bytes of `ids` (token_length(id) bytes each). With errors="strict" a
    failure names the token where the bad bytes start, counting tokens from `first_index`."""
    if errors == "replace":
        return data.decode("utf-8", errors="replace")
    if errors != "strict":
        raise ValueError(f"errors must be 'replace' or 'strict', got {errors!r}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        end = 0
        for k, tid in enumerate(ids):
            end += token_length(tid)
            if e.start < end:
                break
        reason = f"{e.reason}: ids do not form valid UTF-8 in token #{first_index + k} (id {tid})"
        raise UnicodeDecodeError("utf-8", data, e.start, e.end, reason) from None


class BytePairTokenizer:
    """Byte-level BPE over tiktoken; implements `csm_core.protocols.TextTokenizer`.

    Special tokens written in the text are encoded as plain text unless `allow_special=True`, so
    user input cannot inject `<|end_of_text|>`. Added tokens that are not special (possible in a
    `tokenizer.json`) are always matched, as Hugging Face `tokenizers` does.
    """

    def __init__(
        self,
        name: str,
        ranks: dict[bytes, int],
        special_tokens: Mapping[str, int],
        pattern: str,
        *,
        bos_token: str,
        eos_token: str,
        always_matched: Iterable[str] = (),
        source: str = "",
    ) -> None:
        missing_bytes = [b for b in range(256) if bytes([b]) not in ranks]
        if missing_bytes:
            # tiktoken needs every single byte as a token or it cannot encode arbitrary text.
            raise TokenizerFileError(
                f"{source or name}: byte-level vocabulary lacks {len(missing_bytes)} single-byte tokens "
                f"(first: 0x{missing_bytes[0]:02x}); expected all 256"
            )
        for tok in (bos_token, eos_token):
            if tok not in special_tokens:
                raise TokenizerFileError(f"{source or name}: special token {tok!r} not in the vocabulary")
        all_ids = set(ranks.values()) | set(special_tokens.values())
        if len(all_ids) != len(ranks) + len(special_tokens):
            raise TokenizerFileError(f"{source or name}: a special token reuses the id of another token")
        if max(all_ids) >= 2 * len(all_ids) + 256:
            # unused ids are tracked one by one (decode refuses them): a sparse id space costs memory
            raise TokenizerFileError(
                f"{source or name}: largest id {max(all_ids)} but only {len(all_ids)} tokens; ids must be dense"
            )
        self.name = name
        self.source = source
        self.pattern = pattern
        self.special_tokens: dict[str, int] = dict(special_tokens)
        try:
            self._enc = tiktoken.Encoding(
                name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=self.special_tokens
            )
        except ValueError as e:  # the pre-tokenizer regex does not compile
            raise TokenizerFileError(f"{source or name}: unusable pre-tokenizer pattern ({e})") from None
        self._ranks = ranks
        self._always_matched = frozenset(always_matched)
        self.bos_id: int = self.special_tokens[bos_token]
        self.eos_id: int = self.special_tokens[eos_token]
        self.vocab_size: int = max(all_ids) + 1
        # Ids below vocab_size that name no token (none for Llama 3; possible in a tokenizer.json).
        self._missing_ids = frozenset(range(self.vocab_size)) - all_ids
        self._special_by_id = {i: s for s, i in self.special_tokens.items()}

    def __repr__(self) -> str:
        return f"BytePairTokenizer({self.name!r}, vocab_size={self.vocab_size}, source={self.source!r})"

    def encode(
        self, text: str, *, bos: bool = False, eos: bool = False, allow_special: bool = False
    ) -> list[int]:
        """Text → ids; `bos`/`eos` add the begin/end-of-text ids around them."""
        check_text(text)
        if allow_special:
            ids = self._enc.encode(text, allowed_special="all", disallowed_special=())
        elif self._always_matched:
            ids = self._enc.encode(text, allowed_special=self._always_matched, disallowed_special=())
        else:
            ids = self._enc.encode_ordinary(text)  # fastest path: no special-token scan at all
        if bos:
            ids.insert(0, self.bos_id)
        if eos:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: Iterable[int], *, errors: str = "replace") -> str:
        """Ids → text. Byte sequences that are not valid UTF-8 (a token can hold part of a
        character) become U+FFFD with errors="replace" and raise UnicodeDecodeError with
        errors="strict". Special ids decode to their names."""
        ids = check_ids(ids, self.vocab_size, self._missing_ids)
        return decode_utf8(self._enc.decode_bytes(ids), errors, ids, self._token_length)

    def _token_length(self, token_id: int) -> int:
        return len(self._enc.decode_single_token_bytes(token_id))

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        ids = check_ids(ids, self.vocab_size, self._missing_ids)
        return self._enc.decode_bytes(ids)

    def id_to_bytes(self, token_id: int) -> bytes:
        """The bytes of one token (a special token gives its name in UTF-8)."""
        (token_id,) = check_ids([token_id], self.vocab_size, self._missing_ids)
        return self._enc.decode_single_token_bytes(token_id)

    def token_to_id(self, token: str) -> int:
        """Id of a special token by name (e.g. "<|end_of_text|>"), or of the ordinary vocabulary
        token whose bytes are `token` in UTF-8."""
        if not isinstance(token, str):
            raise TypeError(f"token must be str, got {type(token).__name__}")
        if token in self.special_tokens:
            return self.special_tokens[token]
        rank = self._ranks.get(token.encode("utf-8", errors="surrogatepass"))
        if rank is None:
            raise KeyError(f"{token!r} is neither a special token nor a single vocabulary token")
        return rank

    def is_special(self, token_id: int) -> bool:
        return token_id in self._special_by_id
