#!/usr/bin/env python
"""Loopback load test of `csm serve`: N concurrent asyncio/httpx clients stream pcm from
POST /v1/audio/speech, a fixed number of requests each, within a fixed duration; it stops by itself.

Reports, per load: streams that kept up with real time (>= 12.5 frames/s each, measured from the
first byte to the last), per-stream frames/s (p5 / median), time to first audio (p50 / p95),
aggregate frames/s, errors. Either against a running server (`--url`, loopback addresses only),
or a server it starts in a child process on random weights of the real shapes (`--config`).

    python tools/load_test.py --config tiny --slots 4 --clients 1 2 4 --count 3 --frames 25
    flock /work/bigmem.lock python tools/load_test.py --config full --quant q4_0 --slots 2 --clients 1 2 --count 2
    python tools/load_test.py --url http://127.0.0.1:8000 --clients 8 --count 4 --duration 120
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
for pkg in ("csm-core", "csm-cpu", "csm-audio", "csm-tokenizers", "csm-app"):
    src = ROOT / "packages" / pkg / "src"
    if src.is_dir() and str(src) not in sys.path:
        sys.path.append(str(src))

FRAME_BYTES = 2 * 1920  # one 80 ms frame of 16-bit pcm at 24 kHz
REAL_TIME = 12.5
TEXTS = ["The quick brown fox jumps over the lazy dog.", "Hello from a load test.",
         "Streams are served side by side.", "One more sentence to say."]  # fmt: skip


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(p / 100 * (len(xs) - 1))))]


# ---- the server, when this tool starts one ----
def serve_random(config: str, quant: str, slots: int, threads: int | None, port_queue) -> None:
    """Child process: random weights of the given shapes, csm_app's server on a free loopback port."""
    import logging

    logging.getLogger("csm_audio").setLevel(logging.ERROR)  # random weights clip now and then: not news here

    from csm_app.facade import CSM
    from csm_app.server import run_server
    from csm_app.speech_service import SpeechService
    from csm_audio import Mimi
    from csm_core import csm_1b, csm_tiny, mimi, mimi_tiny
    from csm_core.options import GenerationOptions
    from csm_core.testing.csm import random_csm_weights
    from csm_core.testing.generation import FakeTokenizer
    from csm_core.testing.mimi import random_mimi_weights
    from csm_cpu.backend import CpuBackend

    cfg, mcfg = (csm_1b(), mimi()) if config == "full" else (csm_tiny(), mimi_tiny())
    weights = random_csm_weights(cfg, seed=0)
    model = CpuBackend(cfg, weights, quant, threads=threads)
    del weights
    codec = Mimi(mcfg, random_mimi_weights(mcfg, seed=0))
    tok_path = ROOT.parent / "shared" / "testdata" / "llama3" / "tokenizer.model"
    if tok_path.is_file():
        from csm_tokenizers import load_tokenizer

        tok = load_tokenizer(tok_path)
    else:
        tok = FakeTokenizer()
    tts = CSM(model, tok, codec)  # no watermark: the model and the codec are what is measured
    service = SpeechService(tts, slots=slots, max_waiting=256, defaults=GenerationOptions(split_sentences=False))
    run_server(service, "127.0.0.1", 0, grace_s=1.0, on_listening=lambda h, p: port_queue.put(p))


# ---- the clients ----
async def one_stream(client, url: str, text: str, frames: int, deadline: float) -> dict:
    body = {"input": text, "voice": "0", "response_format": "pcm", "max_audio_ms": frames * 80}
    t0 = time.perf_counter()
    first = last = None
    size = 0
    try:
        async with asyncio.timeout(max(1.0, deadline - time.monotonic())):
            async with client.stream("POST", url + "/v1/audio/speech", json=body) as r:
                if r.status_code != 200:
                    return {"error": f"HTTP {r.status_code}: {(await r.aread())[:200]!r}"}
                async for piece in r.aiter_raw():
                    now = time.perf_counter()
                    first = first or now
                    last = now
                    size += len(piece)
    except TimeoutError:
        return {"error": "cut at the test's duration", "cut": True}
    except Exception as e:  # noqa: BLE001 - counted and reported
        return {"error": f"{type(e).__name__}: {e}"}
    got = size // FRAME_BYTES
    if got != frames:
        return {"error": f"{got} frames, expected {frames}"}
    span = (last - first) if last and first else 0.0
    # the first chunk's frames arrive with the first byte: the rate is the rest over the time they took
    rate = (got - first_chunk_frames(got)) / span if span > 0 else float("inf")
    return {"ttfa": first - t0, "rate": rate, "frames": got, "span": span}


def first_chunk_frames(frames: int, chunk_frames: int = 5) -> int:
    return min(frames, chunk_frames)


async def run_load(url: str, clients: int, count: int, frames: int, duration: float) -> dict:
    import httpx

    deadline = time.monotonic() + duration
    results: list[dict] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(timeout=httpx.Timeout(duration, connect=10), limits=limits) as client:
        async def worker(i):
            for k in range(count):
                if time.monotonic() >= deadline:
                    return
                results.append(await one_stream(client, url, TEXTS[(i + k) % len(TEXTS)], frames, deadline))

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(clients)))
        wall = time.perf_counter() - t0
    ok = [r for r in results if "error" not in r]
    errors = [r["error"] for r in results if "error" in r]
    rates = [r["rate"] for r in ok]
    return {
        "clients": clients,
        "requests": len(results),
        "ok": len(ok),
        "errors": len(errors),
        "error_kinds": sorted(set(errors))[:3],
        "realtime_streams": sum(r >= REAL_TIME for r in rates),
        "rate_p5": pct(rates, 5),
        "rate_median": statistics.median(rates) if rates else float("nan"),
        "ttfa_p50_ms": 1e3 * pct([r["ttfa"] for r in ok], 50),
        "ttfa_p95_ms": 1e3 * pct([r["ttfa"] for r in ok], 95),
        "aggregate_fps": sum(r["frames"] for r in ok) / wall,
        "wall_s": wall,
    }


def check_loopback(url: str) -> None:
    host = urlparse(url).hostname or ""
    try:
        loop = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loop = False
    if not loop:
        raise SystemExit(f"--url {url}: this load test only targets loopback addresses (127.0.0.0/8, ::1, localhost)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="a running csm serve on this machine (else one is started: --config)")
    ap.add_argument("--config", choices=["tiny", "full"], default="tiny", help="random weights of these shapes")
    ap.add_argument("--quant", default="q8_0", help="cpu weight format of the started server")
    ap.add_argument("--slots", type=int, default=4, help="slots of the started server")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4], help="concurrent clients, one load each")
    ap.add_argument("--count", type=int, default=3, help="requests per client")
    ap.add_argument("--frames", type=int, default=25, help="frames (80 ms) per request")
    ap.add_argument("--duration", type=float, default=300.0, help="seconds per load at most; it stops by itself")
    ap.add_argument("--json", action="store_true", help="print one JSON line per load instead of a table")
    args = ap.parse_args()

    proc = None
    url = args.url
    if url:
        check_loopback(url)
    else:
        ctx = mp.get_context("spawn")
        ports = ctx.Queue()
        proc = ctx.Process(target=serve_random, args=(args.config, args.quant, args.slots, args.threads, ports))
        proc.start()
        url = f"http://127.0.0.1:{ports.get(timeout=600)}"
    label = url if args.url else f"{args.config} CSM (random weights), cpu {args.quant}, {args.slots} slots"
    print(f"# load test: {label}; {args.count} requests x {args.frames} frames per client, <= {args.duration:g} s per load")
    if not args.json:
        print("| clients | ok / requests | errors | streams >= 12.5 f/s | per-stream f/s p5 / median "
              "| time to first audio p50 / p95 (ms) | aggregate f/s |")
        print("|---|---|---|---|---|---|---|")
    try:
        for n in args.clients:
            r = asyncio.run(run_load(url, n, args.count, args.frames, args.duration))
            if args.json:
                print(json.dumps(r))
            else:
                print(f"| {n} | {r['ok']} / {r['requests']} | {r['errors']} {' '.join(r['error_kinds'])} | "
                      f"{r['realtime_streams']} / {r['ok']} | {r['rate_p5']:.1f} / {r['rate_median']:.1f} | "
                      f"{r['ttfa_p50_ms']:.0f} / {r['ttfa_p95_ms']:.0f} | {r['aggregate_fps']:.1f} |", flush=True)
    finally:
        if proc is not None:
            proc.terminate()  # SIGTERM: the server drains and exits 0
            proc.join(60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
