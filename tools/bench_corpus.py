#!/usr/bin/env python
"""Corpus synthesis throughput: rows/s and audio-seconds/s of `csm batch` on one process (the local
path) and on Ray Data with 1, 2, ... actors (each actor a loaded model with its own scheduler).

    python tools/bench_corpus.py --model DIR --rows 32 --actors 1,2 --threads-per-actor 1
    python tools/bench_corpus.py --tiny --rows 32 --actors 1,2          # writes a tiny random model first

--model is any model `csm` loads (a directory, a .gguf with --mimi/--tokenizer). Outputs go to a
temporary directory; every run generates the same rows (ids and seeds fixed), --frames each.
"""

from __future__ import annotations

import argparse
import json
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
    args = ap.parse_args()

    from csm_app.audio_io import FORMATS
    from csm_app.corpus import Manifest, read_rows
    from csm_core import GenerationOptions

    work = Path(tempfile.mkdtemp(prefix="bench_corpus_"))
    model = args.model
    if model is None:
        from app_helpers import write_tiny_model

        model = str(write_tiny_model(work / "tiny"))
    rows = read_rows(rows_file(work, args.rows), "wav", FORMATS, GenerationOptions(max_audio_ms=args.frames * 80,
                                                                                    temperature=0.9))  # fmt: skip
    load = dict(model=model, backend="auto", quant=args.quant, threads=args.threads, mimi=args.mimi,
                tokenizer=args.tokenizer, offline=True, watermark=True)  # fmt: skip
    results = []

    def record(name: str, records, started: float, out: Path) -> None:
        done = [r for r in records if "error" not in r]
        wall = time.perf_counter() - started
        audio = sum(r["duration_s"] for r in done)
        manifest = Manifest(out)
        for r in done:
            manifest.append(r)
        results.append((name, len(done), wall, len(done) / wall, audio / wall))
        print(f"{name:>16}: {len(done)} rows in {wall:.1f} s = {len(done) / wall:.3f} rows/s, {audio / wall:.3f} audio s/s",
              flush=True)  # fmt: skip

    from csm_app.corpus import check_rows, generate_rows, run_meta, VoiceCache
    from csm_app.facade import CSM

    t = time.perf_counter()
    tts = CSM.load(**load)
    sched = tts.scheduler(slots=args.slots, chunk_frames=None)
    check_rows(sched, rows, VoiceCache(tts), work / "local")
    record("local (1 process)", list(generate_rows(tts, sched, rows, work / "local", meta=run_meta(tts, args.quant))),
           t, work / "local")  # fmt: skip
    del tts, sched
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
        t = time.perf_counter()
        recs = list(run_ray("auto", rows, out, dict(load, threads=None), slots=args.slots, actors=n,
                            threads_per_actor=args.threads_per_actor, gpus_per_actor=args.gpus_per_actor))  # fmt: skip
        record(f"ray {n} actor(s)", recs, t, out)
    ray.shutdown()
    base = next((r for r in results if r[0] == f"ray {counts[0]} actor(s)"), None)
    if base:
        for name, _, _, rps, _ in results:
            if name.startswith("ray"):
                print(f"{name}: {rps / base[3]:.2f}x {base[0]}")


if __name__ == "__main__":
    main()
