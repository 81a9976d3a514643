"""Benchmark the csm-cpu backend on full-size CSM-1B shapes (random weights); one table.

    flock /work/bigmem.lock python tools/bench_cpu.py            # everything (~15-25 min)
    python tools/bench_cpu.py --formats q8_0 --threads 2 --no-reference --frames 6
    python tools/bench_cpu.py --formats q8_0 --threads 2 --no-reference --no-competing --batch 1 --slots 1,2,4
    python tools/bench_cpu.py --formats q8_0,q4_0 --threads 1,2,4,8,16 --no-reference --no-competing \
        --batch 1 --profile --isa avx2,avx512      # where the time of a frame goes, per path

Per format (each in its own process, so peak RSS is that format's): load time, peak RSS, median
ms/frame per thread count, prompt prefill positions/s, frames/s for batch sizes, the same under a
competing busy process; with --slots, aggregate frames/s of N slots all decoding (SlotModel path,
each slot at its own position: the prompts differ in length) against B=1.
With --profile, per thread count: each frame's time split into phases (products, attention,
norm/quantize copies and barrier waits of the backbone and the depth decoder, thread 0's serial
sampling; means over the threads, and the largest thread's barrier wait), the parallel regions'
fork/join remainder and the Python time outside the engine. With --isa, each format runs once per
kernel path (CSM_CPU_ISA) in its own process.
Also: the memory bandwidth the f32 kernel reaches (and numpy's sgemv as a peer), the machine's
read ceiling (tools/membw.py), each format's floor (weight bytes per frame / the higher of the
two), % of floor, and the Hugging Face transformers
reference (torch CPU, fp32 and bf16, random init) as peer ratio. Medians of several runs: the
machine may be shared, so read the peer columns, not only the absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))  # make_reference, membw: imported from here by the workers too


class FastRandomWeights:
    """Lazy canonical weights of the exact shapes: values ~N(0, 0.02) cut from one random pool
    (speed only needs realistic magnitudes), norm scales in [0.9, 1.1]; made one at a time."""

    def __init__(self, config, seed: int = 0):
        self.shapes = config.weight_shapes()
        rng = np.random.default_rng(seed)
        self.pool = (rng.standard_normal(1 << 22, dtype=np.float32) * np.float32(0.02))
        self.scales = rng.uniform(0.9, 1.1, 1 << 16).astype(np.float32)

    def keys(self):
        return self.shapes.keys()

    def __getitem__(self, name):
        shape = self.shapes[name]
        n = int(np.prod(shape))
        src = self.scales if name.endswith(".scale") else self.pool
        off = (hash(name) & 0xFFFF) % src.size
        return np.resize(np.roll(src, off), n).reshape(shape)


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # Linux: KiB


def prompt(config, B: int, S: int = 16):
    K = config.audio_num_codebooks
    tok = np.zeros((B, S, K + 1), np.int64)
    mask = np.zeros((B, S, K + 1), bool)
    tok[:, : S // 2, K] = np.arange(S // 2) + 1000
    mask[:, : S // 2, K] = True
    tok[:, S // 2 :, :K] = (np.arange(K) * 37 + np.arange(S - S // 2)[:, None] * 11) % 2048
    mask[:, S // 2 :, :K] = True
    return tok, mask


def time_frames(be, B: int, frames: int, profile: dict | None = None) -> list[float]:
    """Seconds per frame; with profile (a dict), fills it with the engine's phase split per frame."""
    from csm_core.protocols import SamplingParams
    from csm_core.testing.csm import frame_row

    params = SamplingParams()
    be.reset(B, seed=0)
    codes = be.generate_frame(*prompt(be.config, B), params)
    codes = be.generate_frame(*frame_row(codes), params)  # warm-up
    if profile is not None:
        be._engine.profile(True)
    out = []
    for _ in range(frames):
        t = time.perf_counter()
        codes = be.generate_frame(*frame_row(codes), params)
        out.append(time.perf_counter() - t)
    if profile is not None:
        profile.update(phase_split(be._engine.profile_read(), out))
        be._engine.profile(False)
    return out


def phase_split(raw: dict, walls: list[float]) -> dict:
    """ms per frame: each bucket's mean over the threads (and the largest thread's barrier wait),
    the regions' remainder (fork/join, the final implicit barrier) and Python outside the engine."""
    n, nt = len(walls), raw["threads"]
    out = {f"{k}_ms": 1e3 * sum(v) / nt / n for k, v in raw["buckets"].items()}
    for k in ("backbone", "decoder"):
        out[f"{k}_barrier_wait_max_thread_ms"] = 1e3 * max(raw["buckets"][f"{k}_barrier_wait"]) / n
    c = raw["calls"]
    b = raw["buckets"]  # thread 0's accounted time in each kind of region:
    inside = {"backbone": sum(v[0] for k, v in b.items() if k.startswith("backbone")),
              "decoder": sum(v[0] for k, v in b.items() if k.startswith("decoder") or k == "sampling_serial")}
    out["backbone_region_rest_ms"] = 1e3 * (c["backbone_regions_s"] - inside["backbone"]) / n
    out["decoder_region_rest_ms"] = 1e3 * (c["decode_regions_s"] - inside["decoder"]) / n
    out["feed_outside_regions_ms"] = 1e3 * (c["feed_s"] - c["backbone_regions_s"]) / n
    out["python_outside_engine_ms"] = 1e3 * (sum(walls) - c["feed_s"] - c["decode_regions_s"]) / n
    out["frame_ms"] = 1e3 * sum(walls) / n
    return {k: round(v, 3) for k, v in out.items()}


def time_slot_frames(be, n: int, frames: int) -> list[float]:
    """Seconds per step with n slots all decoding (prompts of 16 + 3·slot rows, so the slots sit
    at different positions), after one prefill step and one warm-up step."""
    from csm_core.protocols import SamplingParams, SlotFeed

    params = SamplingParams()
    be.open_slots(n)
    feeds = []
    for s in range(n):
        tok, mask = prompt(be.config, 1, 16 + 3 * s)
        be.admit(s, s, tok[0], mask[0])
        feeds.append(SlotFeed(s, tok[0], mask[0], params))
    codes = be.step(feeds)

    def frame_feeds(codes):
        K = be.config.audio_num_codebooks
        out = []
        for s in range(n):
            tok = np.zeros((1, K + 1), np.int64)
            tok[0, :K] = codes[s]
            mask = np.zeros((1, K + 1), bool)
            mask[0, :K] = True
            out.append(SlotFeed(s, tok, mask, params))
        return out

    codes = be.step(frame_feeds(codes))  # warm-up
    out = []
    for _ in range(frames):
        feeds = frame_feeds(codes)
        t = time.perf_counter()
        codes = be.step(feeds)
        out.append(time.perf_counter() - t)
    be.reset(1)
    return out


def prefill_rate(be, S: int = 128, runs: int = 2) -> float:
    """Prompt positions per second through the backbone: a fresh S-row prompt's first frame minus
    a 2-row prompt's (both include one frame's decode; prefix reuse off); best of `runs`."""
    from csm_core.protocols import SamplingParams

    params = SamplingParams()
    be.reuse_prefix = False

    def first_frame(rows: int) -> float:
        tok, mask = prompt(be.config, 1, rows)
        best = float("inf")
        for _ in range(runs):
            be.reset(1, seed=0)
            t = time.perf_counter()
            be.generate_frame(tok, mask, params)
            best = min(best, time.perf_counter() - t)
        return best

    rate = (S - 2) / (first_frame(S) - first_frame(2))
    be.reuse_prefix = True
    return rate


def worker(args) -> dict:
    from csm_core.config import csm_1b
    from csm_cpu import cpu_features
    from csm_cpu.backend import CpuBackend

    config = csm_1b()
    t = time.perf_counter()
    be = CpuBackend(config, FastRandomWeights(config), args.worker, threads=max(args.threads))
    res = {"fmt": args.worker, "load_s": time.perf_counter() - t, "peak_rss_gb": rss_gb(),
           "bytes_per_frame": be.bytes_per_frame(), "features": cpu_features(), "ms": {}, "fps_batch": {}}
    if args.profile:
        res["profile"] = {}
    if args.prefill_only:
        be.set_threads(max(args.threads))
        for legacy in (False, True):  # the loop order before the prefill rework as peer (same results)
            be.legacy_prefill = legacy
            key = "prefill_legacy_pos_s" if legacy else "prefill_pos_s"
            res[key] = prefill_rate(be, args.prefill_rows, args.prefill_runs)
        be.legacy_prefill = False
        return res
    for th in args.threads:
        be.set_threads(th)
        res["ms"][th] = 1e3 * statistics.median(time_frames(be, 1, args.frames))
        if args.profile:  # a separate run: the timers stay out of the medians above
            res["profile"][th] = {}
            time_frames(be, 1, args.frames, res["profile"][th])
    if args.no_prefill:
        res["prefill_pos_s"] = None
    be.set_threads(max(args.threads))
    if not args.no_prefill:
        res["prefill_pos_s"] = prefill_rate(be, args.prefill_rows, args.prefill_runs)
    for B in args.batch:
        if B > 1 and (args.worker == "q8_0" or len(args.batch) == 1):
            res["fps_batch"][B] = B / statistics.median(time_frames(be, B, max(3, args.frames // 2)))
    if args.slots:
        res["fps_slots"] = {n: n / statistics.median(time_slot_frames(be, n, args.frames)) for n in args.slots}
    if args.competing:
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            res["ms_competing"] = {}
            for th in args.threads:
                be.set_threads(th)
                res["ms_competing"][th] = 1e3 * statistics.median(time_frames(be, 1, args.frames))
        finally:
            hog.kill()
            hog.wait()
    return res


def bandwidth(threads: list[int]) -> dict:
    """GB/s the f32 matrix-vector kernel streams from a 512 MiB matrix; numpy sgemv as peer."""
    from threadpoolctl import threadpool_limits

    from csm_cpu import quant

    w = np.full((65536, 2048), 0.01, np.float32)
    x = np.ones((1, 2048), np.float32)
    q = quant.quantize(w, "f32")
    out = {}
    for th in threads:
        ts = []
        for _ in range(7):
            t = time.perf_counter()
            quant.matmat(q, x, threads=th)
            ts.append(time.perf_counter() - t)
        out[f"kernel_{th}t"] = w.nbytes / statistics.median(ts) / 1e9
    with threadpool_limits(1):
        ts = []
        for _ in range(7):
            t = time.perf_counter()
            w @ x[0]
            ts.append(time.perf_counter() - t)
    out["numpy_sgemv_1t"] = w.nbytes / statistics.median(ts) / 1e9
    return out


def reference(args) -> dict:
    """Hugging Face CsmForConditionalGeneration (random init, full size), seconds per frame."""
    import torch

    from make_reference import embed_frames, hf_config
    from transformers import CsmForConditionalGeneration

    from csm_core.config import csm_1b

    torch.set_num_threads(max(args.threads))
    config = csm_1b()
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.reference_worker]
    with torch.device("cpu"):
        model = CsmForConditionalGeneration(hf_config(config, full=False)).eval().to(dtype)
    tok, mask = prompt(config, 1)
    res = {"dtype": args.reference_worker}
    with torch.no_grad():
        def first_frame(rows: int) -> float:
            """generate() of one frame after a fresh prompt of `rows` rows (backbone prefill + one
            frame), best of --prefill-runs: the same measure as prefill_rate's."""
            t_, m_ = prompt(config, 1, rows)
            e = embed_frames(model, t_, m_).to(dtype)
            a = torch.ones(e.shape[:2], dtype=torch.long)
            best = float("inf")
            for _ in range(args.prefill_runs):
                t = time.perf_counter()
                model.generate(inputs_embeds=e, attention_mask=a, do_sample=True, top_k=50, temperature=0.9,
                               depth_decoder_do_sample=True, depth_decoder_top_k=50, depth_decoder_temperature=0.9,
                               max_new_tokens=1, min_new_tokens=1)
                best = min(best, time.perf_counter() - t)
            return best

        first_frame(2)  # warm-up
        S = args.prefill_rows
        res["prefill_pos_s"] = (S - 2) / (first_frame(S) - first_frame(2))
        if args.prefill_only:
            return res
        emb = embed_frames(model, tok, mask).to(dtype)
        att = torch.ones(emb.shape[:2], dtype=torch.long)

        def run(n):
            t = time.perf_counter()
            model.generate(inputs_embeds=emb, attention_mask=att, do_sample=True, top_k=50, temperature=0.9,
                           depth_decoder_do_sample=True, depth_decoder_top_k=50, depth_decoder_temperature=0.9,
                           max_new_tokens=n, min_new_tokens=n)
            return time.perf_counter() - t

        run(1)
        n = max(2, args.frames // 2)
        per = [(run(1 + n) - run(1)) / n for _ in range(2)]
    res["ms"] = 1e3 * statistics.median(per)
    return res


def prefill_table(args, common: list[str]) -> None:
    """--prefill-only: positions/s of a fresh prompt's first frame, ours per format (and the legacy
    loop order) against transformers fp32 on the same thread count, all in this one invocation."""
    th = max(args.threads)
    print(f"# prompt prefill, {args.prefill_rows} rows minus 2, {th} threads, best of {args.prefill_runs}; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    for fmt in args.formats.split(","):
        r = sub(["--worker", fmt, "--prefill-only", *common])
        print("# " + json.dumps({k: v for k, v in r.items() if k != "features"}), flush=True)
        rows.append(r)
    ref = {} if args.no_reference else sub(["--reference-worker", "fp32", "--prefill-only", *common])
    if ref:
        print("# reference " + json.dumps(ref), flush=True)
    hf = ref.get("prefill_pos_s")
    print(f"\n{'format':6} {'pos/s':>7} {'legacy':>7} {'x legacy':>8} {'x HF fp32':>9}")
    for r in rows:
        if "error" in r:
            print(f"{r.get('fmt', '?'):6} error: {r['error']}")
            continue
        new, old = r["prefill_pos_s"], r["prefill_legacy_pos_s"]
        print(f"{r['fmt']:6} {new:7.1f} {old:7.1f} {new / old:8.2f} " + (f"{new / hf:9.2f}" if hf else f"{'-':>9}"))
    if hf:
        print(f"HF transformers fp32 ({th} thr): {hf:.1f} positions/s")
    elif ref:
        print(f"HF transformers fp32: {ref.get('error', 'no figure')}")


def sub(argv: list[str], env: dict | None = None) -> dict:
    r = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True,
                       env=dict(os.environ, **env) if env else None)
    if r.returncode:
        print(r.stderr[-3000:], file=sys.stderr)
        return {"error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}"}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--formats", default="f32,bf16,q8_0,q4_0,q4_k")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--batch", default="1,4,8")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument("--no-competing", action="store_true")
    ap.add_argument("--prefill-rows", type=int, default=256, help="prompt rows of the prefill measurement")
    ap.add_argument("--prefill-runs", type=int, default=3, help="best of this many first frames per prompt length")
    ap.add_argument("--prefill-only", action="store_true",
                    help="only prompt prefill: ours (new and legacy loop order) and transformers fp32, same threads")
    ap.add_argument("--slots", default="", help="slot counts for the SlotModel path, e.g. 1,2,4 (default: off)")
    ap.add_argument("--profile", action="store_true", help="per-phase time of a frame per thread count")
    ap.add_argument("--no-prefill", action="store_true", help="skip the prompt prefill measurement")
    ap.add_argument("--isa", default="", help="kernel paths to compare, e.g. avx2,avx512 (CSM_CPU_ISA; default: detected)")
    ap.add_argument("--no-membw", action="store_true", help="skip tools/membw.py's read probe")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--reference-worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.threads = [int(t) for t in args.threads.split(",")]
    args.batch = [int(b) for b in args.batch.split(",")]
    args.slots = [int(n) for n in args.slots.split(",") if n]
    args.competing = not args.no_competing
    if args.worker:
        print(json.dumps(worker(args)))
        return
    if args.reference_worker:
        print(json.dumps(reference(args)))
        return

    common = ["--threads", ",".join(map(str, args.threads)), "--frames", str(args.frames),
              "--prefill-rows", str(args.prefill_rows), "--prefill-runs", str(args.prefill_runs)]
    common += ["--profile"] * args.profile + ["--no-prefill"] * args.no_prefill
    if args.prefill_only:
        prefill_table(args, common)
        return
    print(f"# csm-cpu bench, CSM-1B shapes, random weights; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs", flush=True)
    bw = bandwidth(args.threads)
    print("# bandwidth GB/s: " + ", ".join(f"{k} {v:.1f}" for k, v in bw.items()), flush=True)
    try:
        from membw import best_per_thread_count, measure

        if args.no_membw:
            raise RuntimeError("--no-membw")
        probe = best_per_thread_count(measure(max(args.threads)))
        bw.update({f"read_probe_{th}t": v for th, v in probe.items()})
        print("# machine read ceiling GB/s (tools/membw.py): "
              + ", ".join(f"{th} thr {v:.1f}" for th, v in probe.items()), flush=True)
    except (RuntimeError, subprocess.CalledProcessError) as e:
        print(f"# read probe unavailable ({e}); floors use the f32 kernel's bandwidth", flush=True)
    ceiling = max(v for k, v in bw.items() if k.startswith(("kernel", "read_probe")))
    results = []
    for fmt in args.formats.split(","):
        extra = ["--batch", ",".join(map(str, args.batch)), "--slots", ",".join(map(str, args.slots))] + ([] if args.competing and fmt == "q8_0" else ["--no-competing"])
        for isa in args.isa.split(",") if args.isa else [""]:
            r = sub(["--worker", fmt, *common, *extra], {"CSM_CPU_ISA": isa} if isa else None)
            if isa:
                r["fmt"] = f"{fmt}/{isa}"  # the rows of the tables name the path
            results.append(r)
            print("# " + json.dumps(r), flush=True)
    refs = {}
    if not args.no_reference:
        for dt in ("fp32", "bf16"):
            refs[dt] = sub(["--reference-worker", dt, *common])
            print("# reference " + json.dumps(refs[dt]), flush=True)

    ref_ms = {k: v.get("ms") for k, v in refs.items() if "ms" in v}
    print()
    hdr = (f"{'format':11} {'thr':>3} {'ms/frame':>9} {'frames/s':>8} {'floor ms':>8} {'% floor':>7} "
           f"{'MB/frame':>8} {'load s':>6} {'RSS GB':>6} " + " ".join(f"{'x HF ' + k:>9}" for k in ref_ms))
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        if "error" in r:
            print(f"{r.get('fmt', '?'):11} error: {r['error']}")
            continue
        floor = r["bytes_per_frame"] / (ceiling * 1e9) * 1e3
        for th, ms in r["ms"].items():
            peers = " ".join(f"{v / ms:9.2f}" for v in ref_ms.values())
            print(f"{r['fmt']:11} {th:>3} {ms:9.1f} {1e3 / ms:8.2f} {floor:8.1f} {100 * floor / ms:6.0f}% "
                  f"{r['bytes_per_frame'] / 1e6:8.0f} {r['load_s']:6.1f} {r['peak_rss_gb']:6.2f} {peers}")
    print()
    for r in results:
        if r.get("fps_batch"):
            b1 = 1e3 / r["ms"][str(max(args.threads))] if str(max(args.threads)) in r["ms"] else float("nan")
            print(f"batch frames/s {r['fmt']}: B=1 {b1:.2f}, " + ", ".join(f"B={b} {v:.2f}" for b, v in r["fps_batch"].items()))
        if r.get("fps_slots"):
            b1 = 1e3 / r["ms"][str(max(args.threads))] if str(max(args.threads)) in r["ms"] else float("nan")
            print(f"slots all decoding, aggregate frames/s {r['fmt']}: B=1 {b1:.2f}, "
                  + ", ".join(f"{n} slots {v:.2f}" for n, v in r["fps_slots"].items()))
        for th, p in (r.get("profile") or {}).items():
            print(f"profile {r['fmt']} {th} thr, ms/frame: " + ", ".join(f"{k[:-3]} {v:.2f}" for k, v in p.items()))
        if r.get("prefill_pos_s"):
            print(f"prompt prefill {r['fmt']} ({max(args.threads)} thr): {r['prefill_pos_s']:.1f} positions/s")
        if r.get("ms_competing"):
            print(f"with a competing busy process, {r['fmt']} ms/frame: "
                  + ", ".join(f"{th} thr {v:.1f} (alone {r['ms'][th]:.1f})" for th, v in r["ms_competing"].items()))
    for k, v in refs.items():
        print(f"HF transformers {k}: " + (f"{v['ms']:.1f} ms/frame ({1e3 / v['ms']:.2f} frames/s)" if "ms" in v else v.get("error", "")))
    print(f"bandwidth ceiling used for floors: {ceiling:.1f} GB/s (best of the f32 kernel and the read probe)")


if __name__ == "__main__":
    main()
