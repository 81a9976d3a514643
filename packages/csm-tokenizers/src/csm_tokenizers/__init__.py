"""Text tokenizers for CSM: Llama-3 byte-level BPE (tiktoken engine; Meta's `tokenizer.model` or a
Hugging Face `tokenizer.json`), SentencePiece models, and the CSM prompt template.

    tok = load_tokenizer("path/to/tokenizer.model")   # or tokenizer.json, or a directory
    encode_turn(tok, 0, "Hello from Sesame.")          # [128000, 58, 15, 60, 9906, ..., 128001]

Every tokenizer implements `csm_core.protocols.TextTokenizer`.
"""

from .bpe import BytePairTokenizer
from .cli import cli_tokenize
from .errors import MissingExtraError, TokenizerFileError
from .hf_json import load_hf_tokenizer_json
from .llama3 import BEGIN_OF_TEXT, END_OF_TEXT, LLAMA3_PATTERN, llama3_special_tokens, load_llama3_tiktoken
from .loader import detect_format, load_tokenizer
from .sentencepiece_tokenizer import SentencePieceTokenizer
from .template import encode_turn, format_turn

__all__ = [
    "BytePairTokenizer",
    "SentencePieceTokenizer",
    "load_tokenizer",
    "load_llama3_tiktoken",
    "load_hf_tokenizer_json",
    "detect_format",
    "encode_turn",
    "format_turn",
    "cli_tokenize",
    "llama3_special_tokens",
    "LLAMA3_PATTERN",
    "BEGIN_OF_TEXT",
    "END_OF_TEXT",
    "TokenizerFileError",
    "MissingExtraError",
]
