"""Shared fixtures: the real Llama-3 vocabulary (skipped where absent), reference encoders built
independently of csm_tokenizers (tiktoken directly; Hugging Face tokenizers via transformers'
Llama-3 conversion), and a varied text corpus."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
LLAMA3_ENV = "CSM_LLAMA3_TOKENIZER"


def llama3_model_path() -> Path | None:
    """Meta's Llama-3 tokenizer.model: $CSM_LLAMA3_TOKENIZER, else ../shared/testdata beside the repo."""
    env = os.environ.get(LLAMA3_ENV)
    candidates = [Path(env)] if env else []
    candidates.append(REPO_ROOT.parent / "shared" / "testdata" / "llama3" / "tokenizer.model")
    return next((p for p in candidates if p.is_file()), None)


@pytest.fixture(scope="session")
def llama3_path() -> Path:
    path = llama3_model_path()
    if path is None:
        pytest.skip(
            f"Llama-3 tokenizer.model not found: set {LLAMA3_ENV} or put it at "
            f"{REPO_ROOT.parent / 'shared/testdata/llama3/tokenizer.model'} (it is not in the repo)"
        )
    return path


@pytest.fixture(scope="session")
def llama3(llama3_path):
    from csm_tokenizers import load_llama3_tiktoken

    return load_llama3_tiktoken(llama3_path)


@pytest.fixture(scope="session")
def tiktoken_reference(llama3_path):
    """tiktoken.Encoding from tiktoken's own file reader, our code not involved."""
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    ranks = load_tiktoken_bpe(str(llama3_path))
    # Written out again (spec/tokenizer.md §2) rather than imported, so a typo in ours shows up.
    pattern = (
        r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"""
        r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
    )
    return tiktoken.Encoding("llama3-ref", pat_str=pattern, mergeable_ranks=ranks, special_tokens={})


@pytest.fixture(scope="session")
def hf_reference(llama3_path):
    """Hugging Face `tokenizers` Tokenizer made by transformers' Llama-3 (tiktoken) conversion:
    models.BPE over vocab + merges from the ranks, Split(Llama-3 regex) + ByteLevel."""
    pytest.importorskip("tokenizers")
    convert = pytest.importorskip("transformers.convert_slow_tokenizer")
    from csm_tokenizers import llama3_special_tokens

    converter = convert.TikTokenConverter(
        vocab_file=str(llama3_path), extra_special_tokens=list(llama3_special_tokens())
    )
    return converter.converted()


@pytest.fixture(scope="session")
def llama3_json_path(hf_reference, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("llama3_json") / "tokenizer.json"
    hf_reference.save(str(path))
    return path


def _random_text(seed: int, n: int) -> str:
    """Random code points from many scripts and planes (no surrogates)."""
    rng = random.Random(seed)
    ranges = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x4FF), (0x590, 0x6FF), (0x900, 0x97F), (0x3040, 0x30FF),
              (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0x1F300, 0x1FAFF), (0x20000, 0x2A6DF), (0x0, 0x1F)]
    out = []
    for _ in range(n):
        lo, hi = rng.choice(ranges)
        out.append(chr(rng.randint(lo, hi)))
    return "".join(out)


ENGLISH = (
    "The quick brown fox jumps over the lazy dog. It wasn't the first time; it won't be the last.\n"
    "Sesame's Conversational Speech Model (CSM) generates RVQ audio codes from text and audio inputs.\n\n"
)

CORPUS: list[str] = [
    "",
    " ",
    "   ",
    "\n",
    "\n\n\n",
    " \n \n  \n",
    "\t\tindented\twith tabs",
    "a  b   c    d     e",
    "trailing spaces   ",
    "   leading spaces",
    "\r\nwindows\r\nline endings\r\n",
    "1234567890 12 123 1234 12345",
    "3.14159, 1,000,000 and 2024-01-01T12:00:00Z",
    "٣٤٥ Arabic-Indic digits, ①②③, ½ ¾",
    "I'm you're he'll we've they'd it's ISN'T DON'T She'S",
    "'s 's's ''' 'll",
    "can’t won’t — “curly” quotes…",
    "Hello, world! How's it going?... (yes) [no] {maybe} <tag/> &amp;",
    "---***///___===+++",
    "[0]Hello from Sesame.",
    "[1]And this is speaker one.",
    "🦙🔥👍🏽👨‍👩‍👧‍👦 🇫🇷 flags and ZWJ sequences",
    "你好，世界。今天天气很好。",
    "日本語のテキストです。カタカナも。",
    "한국어 문장입니다.",
    "Café naïve façade Ærøskøbing Straße ĳ œuvre",
    "Ελληνικά κείμενα και Русский текст",
    "עברית והערבية العربية",
    "हिन्दी ខ្មែរ ไทย",
    "def f(x):\n    return x ** 2  # square\n\nclass A:\n\tpass\n",
    '{"key": [1, 2.5, null, true], "nested": {"a": "b"}}',
    "<html><body><p class=\"x\">text</p></body></html>",
    "int main(void) { printf(\"%d\\n\", 42); return 0; }",
    "a" * 5000,
    "supercalifragilisticexpialidocious" * 200,
    "ab" * 3000,
    " " * 3000 + "x",
    "\n" * 1000,
    "1" * 1000,
    "🦙" * 500,
    "x" + "\u0301" * 200,
    "\x00\x01\x1f control \x7f chars \u200b\ufeff",
    "U+FFFD is a real character: \ufffd",
    ENGLISH * 20,
    _random_text(0, 3000),
    _random_text(1, 3000),
]


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    return CORPUS
