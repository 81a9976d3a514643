"""Benchmark the numpy Mimi and csm-cpu's Mimi (fp32 and bf16 weights) against moshi and
transformers (torch CPU), same weights, same run.

Prints, for 10 s of audio (full-size Mimi, 32 codebooks, random weights, --threads threads):
encode and decode time as multiples of real time, and one-frame streaming decode latency;
medians of --repeats runs, measured interleaved so every implementation sees the same machine
load, and each one's time relative to the numpy codec's (the machine is shared: ratios measured in
one run hold when absolute times do not). Also prints the load average and a single-GEMM
throughput as the machine's limit.

    flock /work/bigmem.lock python tools/bench_mimi.py [--threads 2] [--repeats 5] [--seconds 10]

With --batch 1,4,16 it prints instead, per row count N: the time of one streaming step that
decodes one frame for each of N rows, batched (Mimi.batch_streaming_decoder) vs N single-stream
decoders (default mode) one after another; medians over --frames steps.
"""

from __future__ import annotations

import argparse
import os
import sys


def _set_threads(n: int) -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="2", help="thread count, or a comma list (one run each)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--frames", type=int, default=40, help="streaming frames timed (after 5 warm-up frames)")
    ap.add_argument("--no-reference", action="store_true", help="skip moshi / transformers")
    ap.add_argument("--batch", default=None, help="row counts (comma list): batched vs single-stream step times only")
    ap.add_argument("--no-cpu", action="store_true", help="skip csm-cpu's Mimi")
    args = ap.parse_args()
    counts = [int(t) for t in str(args.threads).split(",")]
    if len(counts) > 1:  # BLAS thread pools are fixed at import: one process per count
        import subprocess

        for t in counts:
            argv = [a for a in sys.argv[1:] if not a.startswith("--threads")]
            if "--threads" in sys.argv:
                i = sys.argv.index("--threads")
                argv = sys.argv[1:i] + sys.argv[i + 2 :]
            subprocess.run([sys.executable, __file__, "--threads", str(t), *argv], check=True)
        return
    args.threads = counts[0]
    _set_threads(args.threads)  # before numpy / torch load their BLAS

    import time
    from pathlib import Path

    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from csm_audio import Mimi
    from csm_core.config import mimi
    from csm_core.testing.mimi import mimi_test_audio, random_mimi_weights

    cfg = mimi()
    weights = random_mimi_weights(cfg, 0)
    if args.batch:
        _bench_batch(Mimi(cfg, weights), [int(n) for n in args.batch.split(",")], args.frames, args.threads)
        return
    audio = mimi_test_audio(int(args.seconds * cfg.sample_rate), seed=1)
    ours = Mimi(cfg, weights)
    codes = ours.encode(audio)
    impls: dict[str, dict] = {"numpy (csm_audio)": {"encode": lambda: ours.encode(audio), "decode": lambda: ours.decode(codes)}}
    cpu_codecs = {}
    if not args.no_cpu:
        from csm_cpu.mimi import Mimi as CpuMimi

        for fmt in ("f32", "bf16"):
            m = cpu_codecs[f"csm-cpu {fmt}"] = CpuMimi(cfg, weights, fmt=fmt, threads=args.threads)
            impls[f"csm-cpu {fmt}"] = {"encode": lambda m=m: m.encode(audio), "decode": lambda m=m: m.decode(codes)}

    torch = None
    if not args.no_reference:
        import torch

        import make_mimi_reference as ref

        torch.set_num_threads(args.threads)
        moshi = ref.moshi_model(cfg, weights)
        hf = ref.hf_model(cfg, weights)
        x = torch.from_numpy(audio)[None, None]
        c = torch.from_numpy(codes)[None]

        def nograd(f):
            def g():
                with torch.no_grad():
                    return f()
            return g

        impls["moshi " + __import__("moshi").__version__] = {
            "encode": nograd(lambda: moshi.encode(x)),
            "decode": nograd(lambda: moshi.decode(c)),
        }
        impls["transformers " + __import__("transformers").__version__] = {
            "encode": nograd(lambda: hf.encode(x).audio_codes),
            "decode": nograd(lambda: hf.decode(c).audio_values),
        }

    times: dict[tuple[str, str], list[float]] = {}
    for fns in impls.values():  # warm-up
        for f in fns.values():
            f()
    for _ in range(args.repeats):
        for name, fns in impls.items():
            for what, f in fns.items():
                t0 = time.perf_counter()
                f()
                times.setdefault((name, what), []).append(time.perf_counter() - t0)

    stream: dict[str, list[float]] = {}
    n = args.frames + 5
    frames = np.random.default_rng(0).integers(0, cfg.codebook_size, (32, n))
    modes = {None: "numpy (csm_audio)", True: "helper thread on", False: "helper thread off"}
    decs = {modes[mode]: ours.streaming_decoder(mode) for mode in modes}  # default (adaptive), forced on/off
    decs.update({name: m.streaming_decoder() for name, m in cpu_codecs.items()})
    for t in range(n):  # interleaved, so every decoder sees the same machine load
        for key, dec in decs.items():
            t0 = time.perf_counter()
            dec.decode(frames[:, t : t + 1])
            stream.setdefault(key, []).append(time.perf_counter() - t0)
    for key in decs:
        stream[key] = stream[key][5:]
    if torch is not None:
        key = next(k for k in impls if k.startswith("moshi"))
        ts = []
        with torch.no_grad(), moshi.streaming(1):
            for t in range(n):
                ct = torch.from_numpy(frames[:, t : t + 1])[None]
                t0 = time.perf_counter()
                moshi.decode(ct)
                ts.append(time.perf_counter() - t0)
        stream[key] = ts[5:]

    products_ms, products_mb = _frame_products_alone(ours, frames, args.frames)

    a = np.random.default_rng(0).standard_normal((2048, 512), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((512, 2048), dtype=np.float32)
    g = []
    for _ in range(5):
        t0 = time.perf_counter()
        a @ b
        g.append(time.perf_counter() - t0)
    gflops = 2 * 2048 * 512 * 2048 / min(g) / 1e9

    sec = args.seconds
    print(f"\nMimi full size, {sec:g} s of audio, 32 codebooks, {args.threads} threads, medians of {args.repeats}")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; numpy sgemm 2048x512x2048: {gflops:.0f} GFLOP/s")
    print(f"{'implementation':<24} {'encode s':>9} {'x RT':>6} {'/numpy':>6} {'decode s':>9} {'x RT':>6} {'/numpy':>6}"
          f" {'stream ms/frame (median, p90)':>31} {'/numpy':>6}")
    base = "numpy (csm_audio)"
    med = {key: float(np.median(v)) for key, v in times.items()}
    for name in impls:
        enc, dec_t = med[(name, "encode")], med[(name, "decode")]
        s = stream.get(name)
        st = f"{1e3 * np.median(s):.1f}, {1e3 * np.percentile(s, 90):.1f}" if s else "n/a (no streaming decoder)"
        sr = f"{np.median(s) / np.median(stream[base]):.2f}" if s else ""
        print(f"{name:<24} {enc:>9.3f} {sec / enc:>6.1f} {enc / med[(base, 'encode')]:>6.2f} {dec_t:>9.3f} "
              f"{sec / dec_t:>6.1f} {dec_t / med[(base, 'decode')]:>6.2f} {st:>31} {sr:>6}")
    on, off = stream[modes[True]], stream[modes[False]]
    print(f"numpy stream ms/frame with the helper thread forced on: {1e3 * np.median(on):.1f}, off: {1e3 * np.median(off):.1f}")
    print(f"numpy floor of one streamed frame: its products over weights >= 1 MB ({products_mb:.0f} MB), replayed "
          f"alone with the helper thread: {products_ms:.1f} ms ({products_mb / products_ms:.1f} GB/s)")
    print("targets: numpy encode and decode >= 10x RT, one-frame streaming decode <= 15 ms (80 ms of audio); "
          "csm-cpu >= 40x RT, <= 10 ms")


def _bench_batch(model, counts: list[int], steps: int, threads: int) -> None:
    """Per row count N: ms per step (one frame for each of N rows), batched vs N single streams."""
    import time

    import numpy as np

    warm = 5
    rng = np.random.default_rng(0)
    print(f"\nMimi full size, streaming one frame per row per step, {threads} threads, medians of {steps} steps")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"{'rows N':>6} {'batched ms/step':>16} {'N single ms/step':>17} {'ms/frame/row batched':>21} {'speed-up':>9}")
    for n in counts:
        batch = model.batch_streaming_decoder(n)
        singles = [model.streaming_decoder() for _ in range(n)]
        codes = rng.integers(0, model.codebook_size, (warm + steps, n, 32, 1))
        tb, ts = [], []
        for t in range(warm + steps):  # interleaved, so both see the same machine load
            t0 = time.perf_counter()
            batch.decode(range(n), codes[t])
            t1 = time.perf_counter()
            for r, dec in enumerate(singles):
                dec.decode(codes[t, r])
            t2 = time.perf_counter()
            if t >= warm:
                tb.append(t1 - t0)
                ts.append(t2 - t1)
        b, s = 1e3 * float(np.median(tb)), 1e3 * float(np.median(ts))
        print(f"{n:>6} {b:>16.1f} {s:>17.1f} {b / n:>21.1f} {s / b:>8.2f}x")


def _frame_products_alone(model, frames, count: int) -> tuple[float, float]:
    """(median ms, MB of weights): the matrix products with weights of at least 1 MB that one
    streamed frame runs (recorded from a real decode call), replayed back to back through the same
    code path (csm_audio's matmul, helper thread on), i.e. with none of the frame's other work."""
    import time

    import numpy as np

    from csm_audio.mimi import conv, transformer
    from csm_audio.mimi.threads import one_blas_thread

    seen: list[tuple[np.ndarray, np.ndarray]] = []
    real = conv.matmul

    def record(x, w, paired=False):
        if w.nbytes >= 1 << 20:
            seen.append((np.array(x), w))
        return real(x, w, paired)

    dec = model.streaming_decoder(True)
    for t in range(5):
        dec.decode(frames[:, t : t + 1])
    conv.matmul = transformer.matmul = record
    try:
        dec.decode(frames[:, 5:6])
    finally:
        conv.matmul = transformer.matmul = real
    ts = []
    with one_blas_thread():
        for _ in range(count):
            t0 = time.perf_counter()
            for x, w in seen:
                real(x, w, True)
            ts.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(ts)), sum(w.nbytes for _, w in seen) / 1e6


if __name__ == "__main__":
    main()
