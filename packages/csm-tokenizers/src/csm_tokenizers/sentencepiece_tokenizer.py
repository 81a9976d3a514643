"""SentencePiece `.model` files (BPE or unigram) through the `sentencepiece` library.

Optional: install with `pip install "csm-tokenizers[sentencepiece]"`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable

from .bpe import check_ids, check_text, decode_utf8
from .errors import MissingExtraError, TokenizerFileError

__all__ = ["SentencePieceTokenizer", "import_sentencepiece"]


def import_sentencepiece():
    try:
        import sentencepiece
    except ImportError:
        raise MissingExtraError(
            "reading a SentencePiece .model needs the 'sentencepiece' package: "
            'pip install "csm-tokenizers[sentencepiece]"'
        ) from None
    return sentencepiece


class SentencePieceTokenizer:
    """Implements `csm_core.protocols.TextTokenizer` over a SentencePiece model.

    Ids are exactly the library's. "Special tokens" are the control pieces (<s>, </s>, any
    `control_symbols`): SentencePiece never produces them from text, so text that spells "</s>" is
    plain text unless `allow_special=True`, which maps each spelled control piece to its id.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        spm = import_sentencepiece()
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file not found: {path}")
        self.source = str(path)
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.Load(str(path))
        except (RuntimeError, OSError, ValueError) as e:  # ValueError: the library's UnicodeDecodeError for a bad piece
            raise TokenizerFileError(
                f"{path}: not a readable SentencePiece model ({e}); file damaged or truncated?"
            ) from None
        sp = self._sp
        self.vocab_size: int = sp.get_piece_size()
        # -1 where the model was trained without that piece (bos_id=-1); encode(bos=True) then fails.
        self.bos_id: int = sp.bos_id()
        self.eos_id: int = sp.eos_id()
        self.special_tokens: dict[str, int] = {
            sp.id_to_piece(i): i for i in range(self.vocab_size) if sp.is_control(i)
        }
        names = sorted(self.special_tokens, key=len, reverse=True)  # longest first: "</s>" before "<s>"
        self._special_re = re.compile("|".join(map(re.escape, names))) if names else None

    def __repr__(self) -> str:
        return f"SentencePieceTokenizer(vocab_size={self.vocab_size}, source={self.source!r})"

    def encode(
        self, text: str, *, bos: bool = False, eos: bool = False, allow_special: bool = False
    ) -> list[int]:
        check_text(text)
        for flag, tid, name in ((bos, self.bos_id, "bos"), (eos, self.eos_id, "eos")):
            if flag and tid < 0:
                raise ValueError(f"{self.source}: this SentencePiece model has no {name} piece ({name}_id=-1)")
        if allow_special and self._special_re is not None and self._special_re.search(text):
            ids: list[int] = []
            pos = 0
            for m in self._special_re.finditer(text):
                if m.start() > pos:
                    ids += self._sp.encode(text[pos : m.start()], out_type=int)
                ids.append(self.special_tokens[m.group()])
                pos = m.end()
            if pos < len(text):
                ids += self._sp.encode(text[pos:], out_type=int)
        else:
            ids = self._sp.encode(text, out_type=int)
        if bos:
            ids.insert(0, self.bos_id)
        if eos:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: Iterable[int], *, errors: str = "replace") -> str:
        """Ids → text as the library decodes it (control pieces vanish, <unk> reads " ⁇ ").
        Byte pieces that do not form valid UTF-8 give U+FFFD, or raise with errors="strict"."""
        ids = check_ids(ids, self.vocab_size)
        if errors == "strict":
            self._check_byte_runs(ids)
        elif errors != "replace":
            raise ValueError(f"errors must be 'replace' or 'strict', got {errors!r}")
        return self._sp.decode(ids)

    def _check_byte_runs(self, ids: list[int]) -> None:
        """The library joins each run of byte-fallback pieces (<0xNN>) and decodes it as UTF-8,
        putting U+FFFD where that fails; strict decoding raises there instead."""
        run: list[int] = []  # positions in ids of the current run of byte pieces
        for k, tid in enumerate([*ids, -1]):
            if tid >= 0 and self._sp.is_byte(tid):
                run.append(k)
                continue
            if run:
                data = bytes(int(self._sp.id_to_piece(ids[j])[3:5], 16) for j in run)
                decode_utf8(data, "strict", [ids[j] for j in run], lambda _: 1, first_index=run[0])
                run = []

    def token_to_id(self, token: str) -> int:
        """Id of a piece (e.g. "</s>", "▁the")."""
        if not isinstance(token, str):
            raise TypeError(f"token must be str, got {type(token).__name__}")
        tid = self._sp.piece_to_id(token)
        if self._sp.id_to_piece(tid) != token:  # unknown pieces map to unk_id
            raise KeyError(f"{token!r} is not a piece of {self.source}")
        return tid

    def is_special(self, token_id: int) -> bool:
        return token_id in self.special_tokens.values()
