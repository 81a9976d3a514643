#!/usr/bin/env python
"""Serving benchmark: continuous batching (csm_core.scheduler) under a simulated load.

Requests arrive as a Poisson process (--rate per second; 0 = all at once, --stagger S = one every S
seconds), with texts from one sentence to a paragraph and --context-share of them carrying a 10 s
voice context (125 frames of codes). Each is generated to --frames frames (random weights never
emit the all-zero stop) and its audio decoded in chunks by the codec's batched streaming decoder.
Reports, from one run: sustained concurrent streams, per-stream frames/s (p5 and median), time to
first audio (p50/p95, from arrival), aggregate frames/s, the longest gap between two frames of a
running stream (in step times), peak memory; with --sequential the same requests one after another
(1 slot) and the ratio; with --hf the same requests through transformers' batched `generate` in
static batches of --hf-batch (the peer; on cuda if torch sees a GPU, else CPU).

    python tools/bench_serving.py --backend cpu --quant q8_0 --slots 4 --requests 4 --stagger 2 --sequential
    python tools/bench_serving.py --backend mlx --dtype bf16 --slots 256 --requests 512 --rate 64 --frames 50
    python tools/bench_serving.py --tiny --backend cpu --slots 4 --requests 8 --rate 0     # smoke test

Full-size CPU runs need ~9 GB: run them alone (`flock /work/bigmem.lock ...` here).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for pkg in ("csm-core", "csm-cpu", "csm-mlx", "csm-audio", "csm-tokenizers"):
    src = ROOT / "packages" / pkg / "src"
    if src.is_dir() and str(src) not in sys.path:
        sys.path.append(str(src))
sys.path.append(str(ROOT / "tools"))

import numpy as np  # noqa: E402

from csm_core import GenerationOptions, Segment, csm_1b, csm_tiny, mimi, mimi_tiny  # noqa: E402
from csm_core.scheduler import Scheduler  # noqa: E402
from csm_core.testing.generation import FakeTokenizer  # noqa: E402
from csm_core.testing.mimi import random_mimi_weights  # noqa: E402

TEXTS = [
    "Hello there.",
    "The quick brown fox jumps over the lazy dog.",
    "I was thinking we could meet tomorrow afternoon, if that still works for you.",
    "Streaming speech synthesis is judged by two numbers: how soon the first audio arrives, and whether "
    "every listener keeps getting audio faster than it plays. Continuous batching is how one model "
    "serves many listeners at once without making any of them wait for the others.",
]
REALTIME_FPS = 12.5


def tokenizer():
    """The real Llama-3 tokenizer ($CSM_LLAMA3_TOKENIZER or beside the checkout), else bytes."""
    import os

    path = Path(os.environ.get("CSM_LLAMA3_TOKENIZER") or ROOT.parent / "shared" / "testdata" / "llama3" / "tokenizer.model")
    if path.is_file():
        from csm_tokenizers import load_tokenizer

        return load_tokenizer(path)
    return FakeTokenizer()


def build(args):
    """(SlotModel, codec, label) with random weights."""
    cfg, mcfg = (csm_tiny(), mimi_tiny()) if args.tiny else (csm_1b(), mimi())
    if args.backend == "cpu":
        from csm_audio import Mimi
        from csm_core.testing.csm import random_csm_weights
        from csm_cpu.backend import CpuBackend

        model = CpuBackend(cfg, random_csm_weights(cfg, seed=0), args.quant, threads=args.threads)
        codec = Mimi(mcfg, random_mimi_weights(mcfg, 1))
        return model, codec, f"cpu {args.quant} threads={model.threads}"
    import mlx.core as mx
    from bench_mlx import random_model
    from csm_mlx.backend import MlxBackend
    from csm_mlx.mimi.codec import MlxMimi
    from csm_mlx.model import resolve_dtype

    dtype = resolve_dtype(args.dtype)
    model = MlxBackend(cfg, model=random_model(cfg, dtype, args.bits, 64))
    codec = MlxMimi(mcfg, random_mimi_weights(mcfg, 1))
    return model, codec, f"mlx {args.dtype}{f' q{args.bits}' if args.bits else ''} on {mx.default_device()}"


def workload(args, cfg, rng):
    """[(arrival s, text, context)] for --requests requests."""
    t, out = 0.0, []
    K = cfg.audio_num_codebooks
    for i in range(args.requests):
        if args.stagger:
            t = i * args.stagger
        elif args.rate > 0:
            t += rng.exponential(1 / args.rate)
        ctx = ()
        if rng.random() < args.context_share:
            codes = rng.integers(0, 2048, (K, args.context_frames))
            ctx = (Segment(1, "This is how my voice sounds when I talk.", codes=codes),)
        out.append((t, TEXTS[i % len(TEXTS)], ctx))
    return out


def run(sched: Scheduler, requests, frames: int, seed: int) -> dict:
    """Drive the scheduler as a server's worker would: submit on arrival, step while busy."""
    opts = GenerationOptions(max_audio_ms=frames * 80, split_sentences=False)
    jobs, times, step_times = [], {}, []
    pending = list(enumerate(requests))
    start = time.perf_counter()
    running_counts = []
    while pending or sched.busy:
        now = time.perf_counter() - start
        while pending and pending[0][1][0] <= now:
            i, (arrival, text, ctx) = pending.pop(0)
            job = sched.submit(text, 0, ctx, opts.replace(seed=seed + i))
            jobs.append((job, arrival))
            times[job.id] = []
        if not sched.busy:
            time.sleep(min(0.01, max(0.0, pending[0][1][0] - now)))
            continue
        t0 = time.perf_counter()
        sched.step()
        t1 = time.perf_counter() - start
        step_times.append(time.perf_counter() - t0)
        running_counts.append(sched.running)
        for job, _ in jobs:
            if len(job.frames) > len(times[job.id]):
                times[job.id] += [t1] * (len(job.frames) - len(times[job.id]))
            job.take_audio()
    wall = time.perf_counter() - start
    fps, ttfa, gaps = [], [], []
    for job, arrival in jobs:
        ts = times[job.id]
        if job.stats.time_to_first_audio_s is not None:
            ttfa.append(job.stats.started_at - start + job.stats.time_to_first_audio_s - arrival)
        if len(ts) > 1:
            fps.append((len(ts) - 1) / (ts[-1] - ts[0]) if ts[-1] > ts[0] else float("inf"))
            gaps.append(max(np.diff(ts)))
    total = sum(len(job.frames) for job, _ in jobs)
    step_med = statistics.median(step_times) if step_times else float("nan")
    return {
        "requests": len(jobs), "frames": total, "wall_s": wall, "aggregate_fps": total / wall,
        "streams_max": max(running_counts, default=0),
        "streams_median": statistics.median(running_counts) if running_counts else 0,
        "stream_fps_p5": float(np.percentile(fps, 5)) if fps else float("nan"),
        "stream_fps_median": statistics.median(fps) if fps else float("nan"),
        "ttfa_p50_ms": 1e3 * float(np.percentile(ttfa, 50)) if ttfa else float("nan"),
        "ttfa_p95_ms": 1e3 * float(np.percentile(ttfa, 95)) if ttfa else float("nan"),
        "step_ms_median": 1e3 * step_med, "max_gap_steps": (max(gaps) / step_med) if gaps else float("nan"),
    }  # fmt: skip


def hf_peer(args, cfg, requests) -> dict | str:
    """The same requests through transformers' batched generate, static batches of --hf-batch."""
    try:
        import torch
        from make_reference import hf_config
        from transformers import CsmForConditionalGeneration
    except ImportError as e:
        return f"skipped ({e.name} not importable)"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[args.hf_dtype]
    torch.manual_seed(0)
    model = CsmForConditionalGeneration(hf_config(cfg, full=not args.tiny)).to(device=device, dtype=dtype).eval()
    tz = tokenizer()
    kw = dict(do_sample=True, top_k=50, temperature=0.9, depth_decoder_do_sample=True, depth_decoder_top_k=50,
              depth_decoder_temperature=0.9, max_new_tokens=args.frames, min_new_tokens=args.frames)  # fmt: skip
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    start, frames = time.perf_counter(), 0
    for b in range(0, len(requests), args.hf_batch):
        group = requests[b : b + args.hf_batch]
        ids = [tz.encode(f"[0]{text}", bos=True, eos=True) for _, text, _ in group]
        S = max(map(len, ids))
        x = torch.zeros((len(ids), S), dtype=torch.long)
        attn = torch.zeros((len(ids), S), dtype=torch.long)
        for i, row in enumerate(ids):  # left padding
            x[i, S - len(row):] = torch.tensor(row)
            attn[i, S - len(row):] = 1
        with torch.no_grad():
            model.generate(input_ids=x.to(device), attention_mask=attn.to(device), **kw)
        sync()
        frames += len(group) * args.frames
    wall = time.perf_counter() - start
    return {"device": device, "batch": args.hf_batch, "frames": frames, "wall_s": wall, "aggregate_fps": frames / wall}


def peak_gib() -> float:
    try:
        import mlx.core as mx

        if mx.default_device().type == mx.gpu:
            return mx.get_peak_memory() / 1024**3
    except ImportError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=["cpu", "mlx"], default="cpu")
    ap.add_argument("--tiny", action="store_true", help="the tiny test config instead of CSM-1B shapes")
    ap.add_argument("--quant", default="q8_0", help="cpu weight format")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--dtype", default="bfloat16", help="mlx dtype")
    ap.add_argument("--bits", type=int, default=None, help="mlx quantization bits")
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--prefill-rows", type=int, default=128)
    ap.add_argument("--chunk-frames", type=int, default=5)
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--rate", type=float, default=1.0, help="Poisson arrivals per second (0: all at once)")
    ap.add_argument("--stagger", type=float, default=0.0, help="one request every S seconds instead")
    ap.add_argument("--frames", type=int, default=25, help="frames per request")
    ap.add_argument("--context-share", type=float, default=0.25)
    ap.add_argument("--context-frames", type=int, default=125)
    ap.add_argument("--warmup", type=int, default=2,
                    help="requests run first, not measured (lasting 2, 3, ... frames: every row count is compiled once)")
    ap.add_argument("--sequential", action="store_true", help="also run them one after another (1 slot)")
    ap.add_argument("--hf", action="store_true", help="also the transformers peer")
    ap.add_argument("--hf-batch", type=int, default=4)
    ap.add_argument("--hf-dtype", choices=["f32", "bf16"], default="f32")
    ap.add_argument("--first-chunk-frames", type=int, default=None, help="frames of each request's first audio chunk")
    ap.add_argument("--profile", action="store_true", help="cProfile the batched run (stderr)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    model, codec, label = build(args)
    if not hasattr(model, "open_slots"):  # a backend without slots: one request at a time
        from csm_core.slots import FrameModelSlots

        print(f"note: {label} has no slots; running 1 slot", file=sys.stderr)
        model, args.slots = FrameModelSlots(lambda m=model: m), 1
    tz = tokenizer()
    rng = np.random.default_rng(0)
    requests = workload(args, model.config, rng)
    results = {"label": label, "slots": args.slots}
    if args.warmup:  # request i lasts i + 2 frames: the running row count passes through every value once
        warm = Scheduler(model, tz, codec, slots=args.slots, prefill_rows=args.prefill_rows, chunk_frames=args.chunk_frames)
        for i in range(min(args.warmup, args.slots)):
            warm.submit(TEXTS[1], 0, (), max_audio_ms=(i + 2) * 80, seed=10_000 + i, split_sentences=False)
        warm.run()
    sched = Scheduler(model, tz, codec, slots=args.slots, prefill_rows=args.prefill_rows, chunk_frames=args.chunk_frames,
                      first_chunk_frames=args.first_chunk_frames)
    if args.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
    results["batched"] = run(sched, requests, args.frames, 0)
    if args.profile:
        prof.disable()
        pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    if args.sequential:
        one = Scheduler(model, tz, codec, slots=1, prefill_rows=args.prefill_rows, chunk_frames=args.chunk_frames)
        results["sequential"] = run(one, [(0.0, t, c) for _, t, c in requests], args.frames, 0)
        results["batched_over_sequential"] = results["batched"]["aggregate_fps"] / results["sequential"]["aggregate_fps"]
    results["peak_gib"] = peak_gib()
    if args.hf:
        results["hf"] = hf_peer(args, model.config, requests)
        if isinstance(results["hf"], dict):
            results["batched_over_hf"] = results["batched"]["aggregate_fps"] / results["hf"]["aggregate_fps"]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"# {label}, {args.slots} slots, {args.requests} requests x {args.frames} frames, "
          f"rate {args.rate}/s stagger {args.stagger}s, {args.context_share:.0%} with a {args.context_frames}-frame context")
    keys = ["aggregate_fps", "streams_median", "streams_max", "stream_fps_p5", "stream_fps_median", "ttfa_p50_ms",
            "ttfa_p95_ms", "step_ms_median", "max_gap_steps", "wall_s"]  # fmt: skip
    print("| run | " + " | ".join(keys) + " |")
    print("|" + "---|" * (len(keys) + 1))
    for name in ("batched", "sequential"):
        if name in results:
            print(f"| {name} | " + " | ".join(f"{results[name][k]:.2f}" for k in keys) + " |")
    for k in ("batched_over_sequential", "hf", "batched_over_hf"):
        if k in results:
            print(f"{k}: {results[k]}")
    print(f"peak memory: {results['peak_gib']:.2f} GiB; real time is {REALTIME_FPS} frames/s per stream")


if __name__ == "__main__":
    main()
