"""Exceptions raised when a tokenizer file or an input is unusable."""

from __future__ import annotations


class TokenizerFileError(ValueError):
    """A vocabulary file is missing pieces, truncated, or in a format this package cannot read.

    The message always names the file and what was expected there.
    """


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the pip extra that provides it."""
