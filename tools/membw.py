"""How fast this machine can read memory: the limit every batch-1 decode is bound by.

    python tools/membw.py                  # table: GB/s per thread count and streams per thread
    python tools/membw.py --json           # the best figure per thread count, for other tools

A small C reader (compiled here with the system C compiler and OpenMP, -O3 -march=native: it is
a probe of this machine, not shipped code) sums a 1 GiB buffer (huge pages asked for) with 1..N
threads, each thread reading 1, 2, 4, 8 or 16 interleaved sequential streams; best of 5 passes.
The best figure over stream counts is the machine's read ceiling: csm-cpu's floors
(weight bytes per frame / bandwidth) and the "% of floor" columns of bench_cpu.py use it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCE = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <omp.h>
#ifdef __linux__
#include <sys/mman.h>
#endif
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
/* S streams of len words each, read 128 bytes of every stream in turn (vectorised adds) */
static uint64_t readS(const uint64_t *p, size_t len, int S) {
    uint64_t acc[16] = {0};
    for (size_t i = 0; i < len; i += 16)
        for (int s = 0; s < S; s++) {
            const uint64_t *q = p + (size_t)s * len + i;
            for (int j = 0; j < 16; j++) acc[j] += q[j];
        }
    uint64_t t = 0;
    for (int j = 0; j < 16; j++) t += acc[j];
    return t;
}
int main(int argc, char **argv) {
    int maxth = atoi(argv[1]), minth = argc > 2 ? atoi(argv[2]) : 1;
    size_t bytes = (size_t)1 << 30, n = bytes / 8;
    uint64_t *p = aligned_alloc(1 << 21, bytes);
    if (!p) return 1;
#ifdef __linux__
    madvise(p, bytes, MADV_HUGEPAGE);
#endif
    for (size_t i = 0; i < n; i++) p[i] = i;
    volatile uint64_t sink = 0;
    int streams[] = {1, 2, 4, 8, 16};
    for (int th = minth; th <= maxth; th++)
        for (int k = 0; k < 5; k++) {
            int S = streams[k];
            double best = 1e30;
            for (int r = 0; r < 5; r++) {
                double t = now();
                #pragma omp parallel num_threads(th)
                {
                    size_t chunk = n / th / S / 16 * 16 * S;
                    uint64_t v = readS(p + omp_get_thread_num() * chunk, chunk / S, S);
                    #pragma omp atomic
                    sink += v;
                }
                t = now() - t;
                if (t < best) best = t;
            }
            size_t read = n / th / S / 16 * 16 * S * th * 8;
            printf("%d %d %.3f\n", th, S, read / best / 1e9);
            fflush(stdout);
        }
    return 0;
}
"""


def measure(max_threads: int, min_threads: int = 1) -> list[tuple[int, int, float]]:
    """[(threads, streams per thread, GB/s)] for min_threads..max_threads threads from the C probe;
    raises RuntimeError if no compiler."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise RuntimeError("no C compiler found (set CC)")
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = Path(tmp, "membw.c"), Path(tmp, "membw")
        src.write_text(SOURCE)
        flags = ["-O3", "-march=native", "-fopenmp"]
        r = subprocess.run([cc, *flags, str(src), "-o", str(exe)], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"compiling the probe failed: {r.stderr.strip()[:500]}")
        out = subprocess.run([str(exe), str(max_threads), str(min_threads)], capture_output=True, text=True, check=True).stdout
    return [(int(a), int(b), float(c)) for a, b, c in (line.split() for line in out.splitlines())]


def best_per_thread_count(rows: list[tuple[int, int, float]]) -> dict[int, float]:
    best: dict[int, float] = {}
    for th, _, gbs in rows:
        best[th] = max(best.get(th, 0.0), gbs)
    return best


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    ap.add_argument("--threads", type=int, default=cpus, help="up to this many threads (default: all CPUs)")
    ap.add_argument("--json", action="store_true", help="print {threads: best GB/s} only")
    args = ap.parse_args(argv)
    try:
        rows = measure(args.threads)
    except RuntimeError as e:
        sys.exit(f"membw: {e}")
    best = best_per_thread_count(rows)
    if args.json:
        print(json.dumps(best))
        return
    streams = sorted({s for _, s, _ in rows})
    print(f"{'threads':>7} " + " ".join(f"{f'{s} str':>7}" for s in streams) + f" {'best':>7}")
    for th in sorted(best):
        cells = {s: g for t, s, g in rows if t == th}
        print(f"{th:>7} " + " ".join(f"{cells[s]:7.1f}" for s in streams) + f" {best[th]:7.1f}")
    print("GB/s read; 1 GiB buffer, best of 5 passes per cell")


if __name__ == "__main__":
    main()
