#!/usr/bin/env python
"""End-to-end generation benchmark: time to first audio, frames/s and real-time factor of the whole
pipeline (Generator + a backend + the numpy Mimi streaming decoder), and batch throughput.

Random weights of the real shapes (or the tiny test config), sampled generation at the official
defaults, a fixed number of frames per utterance (the all-zero stop is masked out by the frame
limit in practice: random models never emit it). Medians over --runs.

    python tools/bench_generation.py --quant q8_0 --frames 25             # CSM-1B shapes, ~9 GB RAM
    python tools/bench_generation.py --config tiny --frames 20 --runs 3      # smoke test
    python tools/bench_generation.py --quant q8_0 --batch 1 4 8              # batch throughput
    python tools/bench_generation.py --quant q8_0 --context-frames 125       # a 10 s voice context, 2 sentences
    python tools/bench_generation.py --quant q8_0 --threads 2 --context-frames 250 --prefill-before-after \
        --chunk-frames --runs 3                                             # 20 s context: old vs new prefill

Run full-size benchmarks alone on the machine (`flock /work/bigmem.lock ...` here).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for pkg in ("csm-core", "csm-cpu", "csm-audio", "csm-tokenizers", "csm-app"):
    src = ROOT / "packages" / pkg / "src"
    if src.is_dir() and str(src) not in sys.path:
        sys.path.append(str(src))

import numpy as np  # noqa: E402

from csm_core import Generator, Request, Segment, csm_1b, csm_tiny, mimi, mimi_tiny  # noqa: E402
from csm_core.testing.csm import random_csm_weights  # noqa: E402
from csm_core.testing.generation import FakeTokenizer  # noqa: E402
from csm_core.testing.mimi import random_mimi_weights  # noqa: E402

TEXT = "The quick brown fox jumps over the lazy dog"


def tokenizer():
    """The real Llama-3 tokenizer when the test vocabulary is beside the checkout, else bytes."""
    path = ROOT.parent / "shared" / "testdata" / "llama3" / "tokenizer.model"
    if path.is_file():
        from csm_tokenizers import load_tokenizer

        return load_tokenizer(path), "llama3"
    return FakeTokenizer(), "bytes"


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=["full", "tiny"], default="full")
    ap.add_argument("--backend", choices=["cpu", "reference"], default="cpu")
    ap.add_argument("--quant", default="q8_0", help="cpu backend weight format: f32, bf16, q8_0, q4_0")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--frames", type=int, default=25, help="frames per utterance (80 ms each)")
    ap.add_argument("--chunk-frames", type=int, nargs="*", default=[1, 5])
    ap.add_argument("--batch", type=int, nargs="*", default=[], help="also measure generate_batch at these B")
    ap.add_argument("--context-frames", type=int, default=0,
                    help="also time two sentences after a voice context of this many frames, prompt-prefix reuse off/on")
    ap.add_argument("--prefill-before-after", action="store_true",
                    help="with --context-frames: instead of the reuse scenario, time to first audio after the context "
                         "with the prefill kernels from before the rework (legacy_prefill) and the current ones")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()

    cfg, mcfg = (csm_1b(), mimi()) if args.config == "full" else (csm_tiny(), mimi_tiny())
    t0 = time.perf_counter()
    weights = random_csm_weights(cfg, seed=0)
    if args.backend == "cpu":
        from csm_cpu.backend import CpuBackend

        model = CpuBackend(cfg, weights, args.quant, threads=args.threads)
        label = f"cpu {args.quant} threads={model.threads}"
    else:
        from csm_core.reference import CSMReference

        model = CSMReference(cfg, weights)
        label = "numpy reference f32"
    del weights
    from csm_audio import Mimi

    codec = Mimi(mcfg, random_mimi_weights(mcfg, seed=0))
    tok, tok_name = tokenizer()
    gen = Generator(model, tok, codec)
    print(f"# {args.config} CSM, {label}, Mimi {args.config}, tokenizer {tok_name}; load {time.perf_counter() - t0:.1f} s")
    max_ms = args.frames * 80
    opts = dict(max_audio_ms=max_ms, split_sentences=False)

    print("| chunk frames | time to first frame (ms) | time to first audio (ms) | frames/s | real-time factor |")
    print("|---|---|---|---|---|")
    for chunk in args.chunk_frames:
        ttff, ttfa, fps, rtf = [], [], [], []
        for run in range(args.runs):
            stream = gen.stream_audio(TEXT, chunk_frames=chunk, seed=run, **opts)
            for _ in stream:
                pass
            st = stream.stats
            ttff.append(st.time_to_first_frame_s * 1e3)
            ttfa.append(st.time_to_first_audio_s * 1e3)
            fps.append(st.total_frames / st.elapsed_s)
            rtf.append(st.real_time_factor)
        print(f"| {chunk} | {median(ttff):.0f} | {median(ttfa):.0f} | {median(fps):.2f} | {median(rtf):.2f} |")

    if args.context_frames and args.prefill_before_after and hasattr(model, "legacy_prefill"):
        prefill_before_after(gen, model, args)
    elif args.context_frames:
        context_scenario(gen, model, args)

    if args.batch:
        print("\n| batch B | frames/s (all rows) | per-row frames/s | throughput vs B=1 |")
        print("|---|---|---|---|")
        base = None
        for b in args.batch:
            rates = []
            for run in range(args.runs):
                t = time.perf_counter()
                outs = gen.generate_batch([Request(TEXT, speaker=i % 2) for i in range(b)], seed=run, max_audio_ms=max_ms)
                rates.append(sum(o.codes.shape[1] for o in outs) / (time.perf_counter() - t))
            r = median(rates)
            if b == 1:
                base = r
            speed = f"{r / base:.2f}x" if base else "-"
            print(f"| {b} | {r:.2f} | {r / b:.2f} | {speed} |")
    return 0


def context_scenario(gen, model, args) -> None:
    """Two sentences after a voice context: the first sentence's time to first frame (the whole
    prompt is new), and the gap before the second sentence's first frame, whose prompt repeats the
    context and the first sentence (prefill of the new rows + one frame)."""
    K = model.config.audio_num_codebooks
    text = f"{TEXT}. {TEXT}."
    print(f"\nvoice context of {args.context_frames} frames, then 2 sentences of {args.frames} frames each")
    print("| prompt prefix reuse | first sentence: time to first frame (ms) | second sentence: gap to its first frame (ms) "
          "| rows reused |")
    print("|---|---|---|---|")
    for reuse in (False, True):
        if not hasattr(model, "reuse_prefix"):
            if reuse:
                break
        else:
            model.reuse_prefix = reuse
        first, gap, reused = [], [], 0
        for run in range(args.runs):  # a new context each run: the first sentence finds nothing cached
            codes = np.random.default_rng([run, reuse]).integers(1, 2048, (K, args.context_frames))
            ctx = [Segment(1, "A few words in the voice to copy.", codes=codes)]
            stream = gen.stream_frames(text, context=ctx, seed=run, max_audio_ms=args.frames * 80)
            times = []
            for _ in stream:
                times.append(time.perf_counter())
            st = stream.stats
            first.append(st.time_to_first_frame_s * 1e3)
            gap.append((times[st.frames[0]] - times[st.frames[0] - 1]) * 1e3)
            reused = st.reused_prompt_frames[1]
        print(f"| {'on' if reuse else 'off'} | {median(first):.0f} | {median(gap):.0f} | {reused} |")
    if hasattr(model, "reuse_prefix"):
        model.reuse_prefix = True


def prefill_before_after(gen, model, args) -> None:
    """Time to first audio (5-frame chunks) of a sentence after a voice context of
    --context-frames frames, a new context each run (nothing cached), with the prompt loop from
    before the prefill rework (model.legacy_prefill: same codes bit for bit) and the current one,
    alternating run by run in this one process; prompt-prefix reuse off (the two settings see the
    same context)."""
    K = model.config.audio_num_codebooks
    times = {True: ([], []), False: ([], [])}
    model.reuse_prefix = False
    for run in range(args.runs):
        for legacy in (True, False):
            model.legacy_prefill = legacy
            codes = np.random.default_rng([run, 7]).integers(1, 2048, (K, args.context_frames))
            ctx = [Segment(1, "A few words in the voice to copy.", codes=codes)]
            stream = gen.stream_audio(TEXT, context=ctx, seed=run, chunk_frames=5, max_audio_ms=400)
            for _ in stream:
                pass
            st = stream.stats
            times[legacy][0].append(st.time_to_first_frame_s * 1e3)
            times[legacy][1].append(st.time_to_first_audio_s * 1e3)
    model.legacy_prefill = False
    model.reuse_prefix = True
    print(f"\nvoice context of {args.context_frames} frames ({args.context_frames * 0.08:.0f} s), one sentence, "
          f"median of {args.runs} (runs alternate)")
    print("| prompt loop | time to first frame (ms) | time to first audio (ms) |")
    print("|---|---|---|")
    for legacy in (True, False):
        print(f"| {'before (legacy)' if legacy else 'after'} | {median(times[legacy][0]):.0f} | {median(times[legacy][1]):.0f} |")
    print(f"time to first audio, before / after: {median(times[True][1]) / median(times[False][1]):.2f}x")


if __name__ == "__main__":
    sys.exit(main())
