#!/usr/bin/env python
"""Corpus synthesis throughput: rows/s and audio-seconds/s of `csm batch` on one process (the local
path) and on Ray Data with 1, 2, ... actors (each actor a loaded model with its own scheduler).

    python tools/bench_corpus.py --model DIR --rows 32 --actors 1,2 --threads-per-actor 1
    python tools/bench_corpus.py --tiny --rows 32 --actors 1,2          # writes a tiny random model first
    flock /work/bigmem.lock python tools/bench_corpus.py --full q4_0 --rows 8 --frames 20 --actors 1,2

--model is any model `csm` loads (a directory, a .gguf with --mimi/--tokenizer). --full QUANT writes
random weights of CSM-1B's and Mimi's real shapes once (tools/make_random_model.py: a csm-cpu .gguf
in QUANT, mimi.safetensors and the Llama-3 tokenizer, under --cache) and uses them. Outputs go to a temporary directory; every
run generates the same rows (ids and seeds fixed), --frames each.

Each run prints its rate over the whole wall time (model loads and Ray's actor start-up included),
its start-up (local: loading the model; Ray: until the actors have loaded theirs, the median of
their ready times, as the actors report them) and the rate over the rest of the wall time, start-up
excluded. --only picks runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for pkg in ("csm-core", "csm-cpu", "csm-audio", "csm-tokenizers", "csm-app", "csm-mlx"):
    src = ROOT / "packages" / pkg / "src"
    if src.is_dir() and str(src) not in sys.path:
        sys.path.append(str(src))
sys.path.append(str(ROOT / "tests" / "app"))


def rows_file(directory: Path, n: int) -> Path:
    path = directory / "requests.jsonl"
    path.write_text("\n".join(json.dumps({"id": f"r{i}", "text": f"Row number {i} of the corpus benchmark."})
                              for i in range(n)))  # fmt: skip
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model path (default with --tiny: a tiny random model)")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--full", metavar="QUANT", help="random CSM-1B weights in this cpu format (q4_0, q8_0, ...)")
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "csm_bench_full"),
                    help="where --full keeps its random model between runs")
    ap.add_argument("--only", default="local,ray", help="which runs: local, ray or both")
    ap.add_argument("--json", help="also write the results to this JSON file")
    ap.add_argument("--mimi")
    ap.add_argument("--tokenizer")
    ap.add_argument("--quant", default=None)
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--frames", type=int, default=25)
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--threads", type=int, default=None, help="kernel threads of the local run")
    ap.add_argument("--actors", default="1,2")
    ap.add_argument("--threads-per-actor", type=int, default=1)
    ap.add_argument("--gpus-per-actor", type=float, default=0.0)
    ap.add_argument("--rows-per-block", type=int, default=None,
                    help="rows per Ray block (default 2 x slots); blocks >= 2 x actors keep every actor busy")
    args = ap.parse_args()

    from csm_app.audio_io import FORMATS
    from csm_app.corpus import Manifest, read_rows
    from csm_core import GenerationOptions

    work = Path(tempfile.mkdtemp(prefix="bench_corpus_"))
    model = args.model
    if args.full:
        from make_random_model import write_model

        paths = write_model(Path(args.cache), "full", gguf=args.full)
        model, args.mimi, args.tokenizer = paths["model"], paths["mimi"], paths["tokenizer"]
        args.quant = None  # the .gguf holds its format
    elif model is None:
        from app_helpers import write_tiny_model

        model = str(write_tiny_model(work / "tiny"))
    rows = read_rows(rows_file(work, args.rows), "wav", FORMATS, GenerationOptions(max_audio_ms=args.frames * 80,
                                                                                    temperature=0.9))  # fmt: skip
    load = dict(model=model, backend="auto", quant=args.quant, threads=args.threads, mimi=args.mimi,
                tokenizer=args.tokenizer, offline=True, watermark=True)  # fmt: skip
    results = []

    def record(name: str, records, started: float, out: Path, startup=lambda: 0.0, **extra) -> None:
        """Drain `records` (manifest records as rows finish); `startup()`, asked afterwards, gives
        the seconds from `started` until the model(s) were loaded and ready."""
        done = []
        for r in records:
            if "error" in r:
                print(f"# {name}: row {r['id']} failed: {r['error']}", flush=True)
            else:
                done.append(r)
        wall = time.perf_counter() - started
        audio = sum(r["duration_s"] for r in done)
        manifest = Manifest(out)
        for r in done:
            manifest.append(r)
        up = startup()
        work = wall - up
        res = dict(run=name, rows=len(done), audio_s=audio, wall_s=wall, rows_per_s=len(done) / wall,
                   audio_s_per_s=audio / wall, startup_s=up, work_s=work, work_rows_per_s=len(done) / work,
                   work_audio_s_per_s=audio / work, **extra)  # fmt: skip
        results.append(res)
        print(f"{name:>16}: {len(done)} rows ({audio:.1f} audio s) in {wall:.1f} s = {res['rows_per_s']:.3f} rows/s, "
              f"{res['audio_s_per_s']:.3f} audio s/s; start-up {up:.1f} s, after it {res['work_rows_per_s']:.3f} rows/s, "
              f"{res['work_audio_s_per_s']:.3f} audio s/s", flush=True)  # fmt: skip

    from csm_app.corpus import check_rows, generate_rows, run_meta, VoiceCache
    from csm_app.facade import CSM

    only = set(args.only.split(","))
    print(f"# {len(rows)} rows x {args.frames} frames, {args.slots} slots, model {model}", flush=True)
    if "local" in only:
        t = time.perf_counter()
        tts = CSM.load(**load)
        sched = tts.scheduler(slots=args.slots, chunk_frames=None)
        check_rows(sched, rows, VoiceCache(tts), work / "local")
        loaded = time.perf_counter() - t
        record("local (1 process)", generate_rows(tts, sched, rows, work / "local", meta=run_meta(tts, args.quant)),
               t, work / "local", startup=lambda: loaded, threads=args.threads)  # fmt: skip
        del tts, sched
    if "ray" not in only:
        return finish(args, results)
    try:
        import ray
    except ImportError:
        print("Ray is not installed: no actor runs (pip install 'csm-app[ray]')")
        return
    from csm_app.corpus_ray import run_ray

    counts = [int(x) for x in args.actors.split(",")]
    ray.init(num_cpus=max(counts) * args.threads_per_actor, include_dashboard=False, log_to_driver=False)
    for n in counts:
        out = work / f"ray{n}"
        t, t_wall = time.perf_counter(), time.time()
        ready: set = set()
        recs = run_ray("auto", rows, out, dict(load, threads=None), slots=args.slots, actors=n,
                       threads_per_actor=args.threads_per_actor, gpus_per_actor=args.gpus_per_actor,
                       rows_per_block=args.rows_per_block, ready_at=ready)  # fmt: skip
        record(f"ray {n} actor(s)", recs, t, out, startup=lambda: statistics.median(ready) - t_wall if ready else 0.0,
               actors=n, threads_per_actor=args.threads_per_actor, actors_seen=len(ready))  # fmt: skip
    ray.shutdown()
    base = next((r for r in results if r["run"] == f"ray {counts[0]} actor(s)"), None)
    if base:
        for r in results:
            if r["run"].startswith("ray"):
                print(f"{r['run']}: {r['rows_per_s'] / base['rows_per_s']:.2f}x {base['run']} over the wall time, "
                      f"{r['work_rows_per_s'] / base['work_rows_per_s']:.2f}x after start-up", flush=True)  # fmt: skip
    finish(args, results)


def finish(args, results) -> None:
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    main()
