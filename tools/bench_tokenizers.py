"""Benchmark csm_tokenizers on the Llama-3 vocabulary: load time and English encoding speed.

    python tools/bench_tokenizers.py [--model PATH/tokenizer.model] [--json PATH/tokenizer.json]
                                     [--runs 5] [--mb 1.0]

Pinned to one CPU core. Peers measured in the same run: tiktoken used directly (our engine, no
wrapper) and Hugging Face `tokenizers` (single-threaded) where installed. Prints medians.
Without --json, a tokenizer.json is built from the .model with transformers' Llama-3 conversion
when transformers is installed (test-only dependency; not timed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # HF tokenizers: one thread, like the others
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO.parent / "shared" / "testdata" / "llama3" / "tokenizer.model"
TARGET_MBPS = 2.0
TARGET_LOAD_S = 1.0


def english_text(n_chars: int) -> str:
    """About n_chars of English prose: markdown and license texts from this checkout, the shared
    docs and the installed packages (sorted, so every run reads the same text)."""
    roots = [REPO, REPO.parent / "shared", Path(sys.prefix) / "lib"]
    files = []
    for root in roots:
        for pattern in ("*.md", "*.rst", "LICENSE*", "*.txt"):
            files += sorted(root.rglob(pattern))
    parts, total = [], 0
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if len(text) < 2000 or sum(c.isascii() for c in text) < 0.99 * len(text):
            continue  # skip stubs and non-English / binary-ish files
        parts.append(text)
        total += len(text)
        if total >= n_chars:
            break
    text = "".join(parts)
    if len(text) < n_chars:
        text = (text * (n_chars // max(len(text), 1) + 1))
    return text[:n_chars]


def median_time(fn, runs: int) -> tuple[tuple[float, float], object]:
    """((median wall s, median CPU s of this process), last result). CPU time is the steadier
    figure on a shared machine; wall time is what a user waits."""
    wall, cpu, result = [], [], None
    for _ in range(runs):
        t, c = time.perf_counter(), time.process_time()
        result = fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return (statistics.median(wall), statistics.median(cpu)), result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path(os.environ.get("CSM_LLAMA3_TOKENIZER", DEFAULT_MODEL)))
    ap.add_argument("--json", type=Path, default=None, help="a Llama-3 tokenizer.json (default: built from --model)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--mb", type=float, default=1.0, help="size of the English text, in millions of characters")
    args = ap.parse_args()
    if not args.model.is_file():
        print(f"Llama-3 tokenizer.model not found at {args.model}; pass --model", file=sys.stderr)
        return 2
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    from csm_tokenizers import (
        LLAMA3_PATTERN,
        llama3_special_tokens,
        load_hf_tokenizer_json,
        load_llama3_tiktoken,
    )

    rows = []  # (what, implementation, median seconds, note)

    def tiktoken_direct():
        ranks = load_tiktoken_bpe(str(args.model))
        specials = llama3_special_tokens()
        return tiktoken.Encoding("ref", pat_str=LLAMA3_PATTERN, mergeable_ranks=ranks, special_tokens=specials)

    t, ours = median_time(lambda: load_llama3_tiktoken(args.model), args.runs)
    rows.append(("load tokenizer.model", "csm_tokenizers", t, f"target < {TARGET_LOAD_S:.0f} s"))
    t, ref = median_time(tiktoken_direct, args.runs)
    rows.append(("load tokenizer.model", "tiktoken direct (peer)", t, "load_tiktoken_bpe + Encoding"))

    hf = None
    json_path = args.json
    tmp = None
    if json_path is None:
        try:
            from transformers.convert_slow_tokenizer import TikTokenConverter

            tmp = tempfile.TemporaryDirectory()
            json_path = Path(tmp.name) / "tokenizer.json"
            converter = TikTokenConverter(vocab_file=str(args.model), extra_special_tokens=list(llama3_special_tokens()))
            converter.converted().save(str(json_path))
        except ImportError:
            json_path = None
    if json_path is not None:
        t, _ = median_time(lambda: load_hf_tokenizer_json(json_path), max(3, args.runs // 2))
        rows.append(("load tokenizer.json", "csm_tokenizers", t, "incl. merge verification"))
        try:
            import tokenizers

            load_hf = lambda: tokenizers.Tokenizer.from_file(str(json_path))  # noqa: E731
            t, hf = median_time(load_hf, max(3, args.runs // 2))
            rows.append(("load tokenizer.json", "HF tokenizers (peer)", t, ""))
        except ImportError:
            pass

    text = english_text(int(args.mb * 1_000_000))
    n_bytes = len(text.encode("utf-8"))
    what = f"encode {n_bytes / 1e6:.2f} MB English"

    def speed(t: tuple[float, float]) -> str:
        return f"{n_bytes / t[0] / 1e6:.2f} MB/s wall, {n_bytes / t[1] / 1e6:.2f} MB/s CPU"

    t, ids = median_time(lambda: ours.encode(text), args.runs)
    rows.append((what, "csm_tokenizers", t, f"{speed(t)} (target >= {TARGET_MBPS})"))
    t, ref_ids = median_time(lambda: ref.encode_ordinary(text), args.runs)
    rows.append((what, "tiktoken direct (peer)", t, speed(t)))
    same = ids == ref_ids
    if hf is not None:
        t, enc = median_time(lambda: hf.encode(text, add_special_tokens=False), max(3, args.runs // 2))
        rows.append((what, "HF tokenizers (peer)", t, speed(t)))
        # HF always matches special-token names spelled in the text (this README's examples do).
        same = same and enc.ids == ours.encode(text, allow_special=True)
    t, _ = median_time(lambda: ours.encode("[0]Hello from Sesame.", bos=True, eos=True), 1000)
    rows.append(("encode one CSM turn", "csm_tokenizers", t, "'[0]Hello from Sesame.'"))

    print(f"csm_tokenizers benchmark: 1 core, median of {args.runs} runs; {len(ids):,} tokens; "
          f"ids identical across implementations: {same}")
    print(f"(machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f})")
    print(f"{'what':<26} {'implementation':<24} {'wall':>10} {'CPU':>10}  note")
    for what, impl, (wall, cpu), note in rows:
        shown = [f"{t * 1e6:.1f} us" if t < 1e-3 else f"{t:.3f} s" for t in (wall, cpu)]
        print(f"{what:<26} {impl:<24} {shown[0]:>10} {shown[1]:>10}  {note}")
    if tmp is not None:
        tmp.cleanup()
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
