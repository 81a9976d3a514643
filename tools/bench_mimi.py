"""Benchmark csm-cpu's Mimi (fp32 and bf16 weights) against the numpy Mimi, moshi and transformers
(torch CPU), same weights, same run, and against this machine's limits.

Prints, for --seconds of audio (full-size Mimi, 32 codebooks, random weights, --threads threads):
encode and decode time as multiples of real time, the FLOP rate that is (csm_cpu.mimi.cost: the
model's FLOPs, the same for every implementation) and its share of this machine's f32 FMA peak
(measured by an in-bench probe on --threads threads); one-frame streaming decode latency against
its floors (weight bytes per frame / measured read bandwidth, FLOPs per frame / peak); medians of
--repeats runs, measured interleaved so every implementation sees the same machine load, each
relative to the first row (the machine may be shared: ratios measured in one run hold when
absolute times do not). --layers adds the FLOP and weight-byte account per layer.

    flock /work/bigmem.lock python tools/bench_mimi.py [--threads 2] [--repeats 5] [--seconds 10]
    python tools/bench_mimi.py --threads 16 --active-wait --no-numpy   # a dedicated 16-core host

Every peer is optional: the numpy codec (csm-audio, which imports soundfile), moshi and
transformers (torch) are skipped with a note where they do not import; csm-cpu needs only numpy
and csm-core. The bandwidth probe (tools/membw.py) needs a C compiler, else its floor is left out.

With --batch 1,4,16 it prints instead, per row count N: the time of one streaming step that
decodes one frame for each of N rows, batched (Mimi.batch_streaming_decoder) vs N single-stream
decoders one after another; medians over --frames steps (the numpy codec).
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
    ap.add_argument("--no-numpy", action="store_true", help="skip the numpy codec (csm-audio)")
    ap.add_argument("--batch", default=None, help="row counts (comma list): batched vs single-stream step times only")
    ap.add_argument("--no-cpu", action="store_true", help="skip csm-cpu's Mimi")
    ap.add_argument("--layers", action="store_true", help="print the FLOP / weight-byte account per layer")
    ap.add_argument("--active-wait", action="store_true",
                    help="OMP_WAIT_POLICY=ACTIVE (idle threads spin: for a dedicated machine; csm-cpu's default is "
                         "PASSIVE, right for a shared one)")
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
    if args.active_wait:
        os.environ["OMP_WAIT_POLICY"] = "ACTIVE"  # before csm_cpu loads the OpenMP runtime

    import time
    from pathlib import Path

    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from csm_core.config import mimi
    from csm_core.testing.mimi import mimi_test_audio, random_mimi_weights

    cfg = mimi()
    weights = random_mimi_weights(cfg, 0)
    NumpyMimi = None
    if not args.no_numpy:
        try:
            from csm_audio.mimi import Mimi as NumpyMimi
        except ImportError as e:
            print(f"numpy codec (csm-audio) skipped: {e}")
    if args.batch:
        if NumpyMimi is None:
            sys.exit("--batch times the numpy codec: csm-audio must import")
        _bench_batch(NumpyMimi(cfg, weights), [int(n) for n in args.batch.split(",")], args.frames, args.threads)
        return
    audio = mimi_test_audio(int(args.seconds * cfg.sample_rate), seed=1)
    impls: dict[str, dict] = {}
    codecs: dict[str, object] = {}  # name -> codec with .streaming_decoder()
    if not args.no_cpu:
        from csm_cpu.mimi import Mimi as CpuMimi

        for fmt in ("f32", "bf16"):
            m = codecs[f"csm-cpu {fmt}"] = CpuMimi(cfg, weights, fmt=fmt, threads=args.threads)
            impls[f"csm-cpu {fmt}"] = {"encode": lambda m=m: m.encode(audio), "decode": lambda m=m: m.decode(codes)}
    if NumpyMimi is not None:
        m = codecs["numpy (csm_audio)"] = NumpyMimi(cfg, weights)
        impls["numpy (csm_audio)"] = {"encode": lambda m=m: m.encode(audio), "decode": lambda m=m: m.decode(codes)}
    if not codecs:
        sys.exit("nothing to time: csm-cpu skipped and the numpy codec does not import")
    codes = next(iter(codecs.values())).encode(audio)

    torch, moshi = None, None
    if not args.no_reference:
        try:
            import torch

            import make_mimi_reference as ref
        except ImportError as e:
            print(f"moshi / transformers skipped: {e}")
            torch = None
    if torch is not None:
        torch.set_num_threads(args.threads)
        x = torch.from_numpy(audio)[None, None]
        c = torch.from_numpy(codes)[None]

        def nograd(f):
            def g():
                with torch.no_grad():
                    return f()
            return g

        try:
            moshi = ref.moshi_model(cfg, weights)
            impls["moshi " + __import__("moshi").__version__] = {
                "encode": nograd(lambda: moshi.encode(x)),
                "decode": nograd(lambda: moshi.decode(c)),
            }
        except ImportError as e:
            print(f"moshi skipped: {e}")
        try:
            hf = ref.hf_model(cfg, weights)
            impls["transformers " + __import__("transformers").__version__] = {
                "encode": nograd(lambda: hf.encode(x).audio_codes),
                "decode": nograd(lambda: hf.decode(c).audio_values),
            }
        except ImportError as e:
            print(f"transformers skipped: {e}")

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
    decs = {name: m.streaming_decoder() for name, m in codecs.items()}
    for t in range(n):  # interleaved, so every decoder sees the same machine load
        for key, dec in decs.items():
            t0 = time.perf_counter()
            dec.decode(frames[:, t : t + 1])
            stream.setdefault(key, []).append(time.perf_counter() - t0)
    for key in decs:
        stream[key] = stream[key][5:]
    if moshi is not None:
        key = next(k for k in impls if k.startswith("moshi"))
        ts = []
        with torch.no_grad(), moshi.streaming(1):
            for t in range(n):
                ct = torch.from_numpy(frames[:, t : t + 1])[None]
                t0 = time.perf_counter()
                moshi.decode(ct)
                ts.append(time.perf_counter() - t0)
        stream[key] = ts[5:]

    _report(args, cfg, impls, times, stream, codecs)


def _limits(threads: int) -> tuple[float, float, float | None]:
    """(f32 FMA peak on `threads` threads, one thread's peak × threads, both FLOP/s; best read
    bandwidth on `threads` threads in GB/s, or None without a C compiler)."""
    from csm_cpu import _mimi

    peak, one = _mimi.fma_peak(threads), _mimi.fma_peak(1)
    try:
        import membw

        bw = max(g for _, _, g in membw.measure(threads, threads))
    except (ImportError, RuntimeError, OSError) as e:
        print(f"bandwidth probe skipped: {e}")
        bw = None
    return peak, one * threads, bw


def _report(args, cfg, impls, times, stream, codecs) -> None:
    import numpy as np

    from csm_cpu.mimi import Mimi as CpuMimi
    from csm_core.testing.mimi import random_mimi_weights
    from csm_cpu.mimi import cost

    sec, th = args.seconds, args.threads
    model = codecs.get("csm-cpu f32") or CpuMimi(cfg, random_mimi_weights(cfg, 0), threads=1)  # the count only
    enc_flops = cost.total(cost.encode_cost(model, sec))[0] * sec
    dec_flops = cost.total(cost.decode_cost(model, sec))[0] * sec
    frame_flops = cost.total(cost.frame_cost(model))[0]
    frame_bytes = {fmt: cost.total(cost.frame_cost(m))[1] for fmt, m in
                   (("f32", model), ("bf16", codecs.get("csm-cpu bf16")))
                   if m is not None}
    peak, ideal, bw = _limits(th)
    print(f"\nMimi full size, {sec:g} s of audio, 32 codebooks, {th} threads, medians of {args.repeats}")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; f32 FMA peak on {th} threads "
          f"{peak / 1e9:.0f} GFLOP/s measured ({ideal / 1e9:.0f} = {th} x one thread's); read bandwidth "
          + (f"{bw:.1f} GB/s" if bw else "not measured"))
    print(f"work: encode {enc_flops / sec / 1e9:.2f} GFLOP per audio second, decode {dec_flops / sec / 1e9:.2f}; "
          f"one streamed frame {frame_flops / 1e6:.0f} MFLOP, reads "
          + ", ".join(f"{b / 1e6:.1f} MB ({f})" for f, b in frame_bytes.items()))
    print(f"{'implementation':<22} {'enc s':>7} {'x RT':>5} {'GFLOP/s':>7} {'%peak':>5} {'/1st':>5} "
          f"{'dec s':>7} {'x RT':>5} {'GFLOP/s':>7} {'%peak':>5} {'/1st':>5} {'stream ms (med, p90)':>21} {'/1st':>5}")
    med = {key: float(np.median(v)) for key, v in times.items()}
    first = next(iter(impls))
    for name in impls:
        enc, dec = med[(name, "encode")], med[(name, "decode")]
        s = stream.get(name)
        st = f"{1e3 * np.median(s):.1f}, {1e3 * np.percentile(s, 90):.1f}" if s else "n/a"
        sr = f"{np.median(s) / np.median(stream[first]):.2f}" if s and first in stream else ""
        print(f"{name:<22} {enc:>7.3f} {sec / enc:>5.1f} {enc_flops / enc / 1e9:>7.1f} {100 * enc_flops / enc / peak:>5.0f} "
              f"{enc / med[(first, 'encode')]:>5.2f} {dec:>7.3f} {sec / dec:>5.1f} {dec_flops / dec / 1e9:>7.1f} "
              f"{100 * dec_flops / dec / peak:>5.0f} {dec / med[(first, 'decode')]:>5.2f} {st:>21} {sr:>5}")
    best = max(peak, ideal)
    for what, fl in (("encode", enc_flops), ("decode", dec_flops)):
        need = 40 * fl / sec
        print(f"{what} at 40x real time needs {need / 1e9:.0f} GFLOP/s = {100 * need / best:.0f}% of the f32 FMA peak "
              f"({best / 1e9:.0f}); at 100% of the peak: {best * sec / fl:.1f}x real time")
    floors = [f"compute {1e3 * frame_flops / best:.1f} ms"]
    if bw:
        floors += [f"weights from memory {1e3 * b / (bw * 1e9):.1f} ms ({f})" for f, b in frame_bytes.items()]
    print("one streamed frame's floors: " + ", ".join(floors) + " (targets: <= 10 ms at 2 threads, <= 4 ms on 16 cores)")
    if args.layers:
        _print_layers(cost, model, sec)


def _print_layers(cost, model, sec) -> None:
    """The account per layer, the transformer's layers summed per part (8 x in_proj, ...)."""
    import re

    print(f"\nper layer: GFLOP per audio second ({sec:g} s clip), MB of weights read once per call")
    for what, rows in (("encode", cost.encode_cost(model, sec)), ("decode", cost.decode_cost(model, sec))):
        tot = cost.total(rows)[0]
        groups: dict[str, list[float]] = {}
        for c in rows:
            g = groups.setdefault(re.sub(r"transformer\.\d+\.", "transformer.*.", c.name), [0.0, 0.0])
            g[0] += c.flops
            g[1] += c.weight_bytes
        print(f"  {what}: {tot / 1e9:.3f} GFLOP per audio second, {cost.total(rows)[1] / 1e6:.1f} MB of weights")
        for name, (fl, nb) in groups.items():
            print(f"    {name:<40} {fl / 1e9:7.3f} {100 * fl / tot:5.1f}%  {nb / 1e6:7.2f} MB")


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


if __name__ == "__main__":
    main()
