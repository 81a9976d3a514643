#!/usr/bin/env python
"""Benchmark the MLX CSM backend: frames/s and peak memory, with random weights of the real shapes.

One self-contained script: it runs from a checkout without installing anything but mlx (it puts
packages/csm-core/src and packages/csm-mlx/src on sys.path), on any MLX device (Apple GPU, CUDA
with mlx[cuda], CPU). Per configuration it prints the median frame time over several runs, the
weight bytes a frame reads and the frames/s that the device's measured read bandwidth allows (the
batch-1 limit, spec: ARCHITECTURE.md "Performance model"), and, with --hf, Hugging Face
transformers on the same kind of device through torch as the peer.

    python tools/bench_mlx.py --dtype bf16 --frames 20             # full CSM-1B, default device
    python tools/bench_mlx.py --dtype bf16 --quant 4 --quant 8     # also 4- and 8-bit
    python tools/bench_mlx.py --config tiny --dtype fp32 --frames 5 --runs 2   # smoke test
    python tools/bench_mlx.py --dtype bf16 --hf                    # + transformers peer (torch)
    python tools/bench_mlx.py --dtype bf16 --slots 64,128,256,512  # continuous batching: N slots decoding
    python tools/bench_mlx.py --tiny --dtype fp32 --slots 4,8 --frames 5 --runs 1   # smoke test

--slots N[,N...]: the SlotModel path (MlxBackend.open_slots/admit/step). Every slot is admitted with
its own prompt (lengths prompt .. prompt + 15, so positions differ), the prompts are prefilled, then
each timed step feeds all N slots their last frame and samples the next (T=0.9, top-k 50, one seed
per slot). Reported per N: ms per step (median), aggregate frames/s, frames/s per stream, and the
batched Mimi streaming decode of N rows (random Mimi weights, float32, chunks of --chunk-frames
frames) in ms per step; a stream is real time while model + codec stay under 80 ms a step.
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for pkg in ("csm-core", "csm-mlx"):
    src = ROOT / "packages" / pkg / "src"
    if src.is_dir() and str(src) not in sys.path:
        sys.path.insert(0, str(src))

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402
from csm_core.config import CSMConfig, csm_1b, csm_tiny  # noqa: E402
from csm_core.protocols import SamplingParams  # noqa: E402
from csm_mlx.backend import MlxBackend  # noqa: E402
from csm_mlx.model import CSMModel, resolve_dtype  # noqa: E402
from csm_mlx.quantize import quantize_model  # noqa: E402
from csm_core.protocols import SlotFeed  # noqa: E402

REALTIME_FPS = 12.5
GIB = 1024**3


def random_model(cfg: CSMConfig, dtype: mx.Dtype, quant: int | None, group_size: int, seed: int = 0) -> CSMModel:
    """CSMModel with N(0, 0.02) weights drawn on the device in `dtype` (no host copy), norms 1."""
    mx.random.seed(seed)
    model = CSMModel(cfg)
    weights = []
    for name, shape in cfg.weight_shapes().items():
        w = mx.ones(shape, dtype) if name.endswith(".scale") else (0.02 * mx.random.normal(shape)).astype(dtype)
        mx.eval(w)  # one tensor at a time keeps the peak at the model size
        weights.append((name, w))
    model.load_weights(weights, strict=True)
    del weights
    if quant is not None:
        quantize_model(model, quant, group_size)
        mx.eval(model.parameters())
    return model


def bytes_per_frame(model: CSMModel) -> int:
    """Weight bytes one frame reads: the backbone once, the depth decoder + projection + one head slice
    31 times, the c0 head once. Embedding rows are gathered (negligible)."""

    def nbytes(module) -> int:
        from mlx.utils import tree_flatten

        return sum(v.nbytes for _, v in tree_flatten(module.parameters()))

    K = model.config.audio_num_codebooks
    per_step = nbytes(model.decoder) + nbytes(model.projection) + model.audio_head[0].nbytes
    return nbytes(model.backbone) + nbytes(model.codebook0_head) + (K - 1) * per_step


def read_bandwidth(gib: float = 1.0, runs: int = 5) -> float:
    """Device read bandwidth in GB/s: time a reduction over a large float32 array (median of runs)."""
    a = mx.ones((int(gib * GIB) // 4,), mx.float32)
    mx.eval(a)
    mx.eval(a.sum())  # warm-up
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        mx.eval(a.sum())
        times.append(time.perf_counter() - t)
    del a
    return a_bytes(gib) / statistics.median(times) / 1e9


def a_bytes(gib: float) -> int:
    return (int(gib * GIB) // 4) * 4


def prompt(cfg: CSMConfig, length: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A text-only prompt [1, length, K+1]."""
    K = cfg.audio_num_codebooks
    rng = np.random.default_rng(seed)
    tokens = np.zeros((1, length, K + 1), np.int64)
    tokens[0, :, K] = rng.integers(0, cfg.text_vocab_size, length)
    mask = np.zeros(tokens.shape, bool)
    mask[0, :, K] = True
    return tokens, mask


def bench_mlx(model: CSMModel, frames: int, runs: int, prompt_len: int, compiled: bool) -> dict:
    be = MlxBackend(model.config, model=model, compile=compiled)
    be.reuse_prefix = False  # every run prefills its whole prompt
    params = SamplingParams(temperature=0.9, topk=50)
    tokens, mask = prompt(model.config, prompt_len)
    prefill, frame_ms = [], []
    mx.reset_peak_memory()
    for r in range(runs + 1):  # run 0 warms up (kernel builds, allocator)
        be.reset(1, seed=r)
        t = time.perf_counter()
        codes = be.generate_frame(tokens, mask, params)
        t_prefill = time.perf_counter() - t
        times, fed_t, fed_m = [], [tokens], [mask]
        for _ in range(frames):
            row = np.zeros((1, 1, tokens.shape[2]), np.int64)
            row[0, 0, :-1] = codes[0]
            rmask = np.zeros(row.shape, bool)
            rmask[0, 0, :-1] = True
            fed_t.append(row)
            fed_m.append(rmask)
            t = time.perf_counter()
            codes = be.generate_frame(row, rmask, params)
            times.append(time.perf_counter() - t)
        if r:
            prefill.append(t_prefill)
            frame_ms.append(1e3 * statistics.median(times))
    # The next sentence's prompt (as the Generator builds it): this prompt, the frames just fed,
    # 8 new text rows. With reuse only the new rows run; without, all of them.
    new_t, new_m = prompt(model.config, 8, seed=1)
    fed_t, fed_m = np.concatenate(fed_t, 1), np.concatenate(fed_m, 1)
    next_t, next_m = np.concatenate([fed_t, new_t], 1), np.concatenate([fed_m, new_m], 1)
    times = {True: [], False: []}
    for _ in range(runs + 1):  # the first round builds the kernels of these shapes
        for reuse in (True, False):
            be.reuse_prefix = False
            be.reset(1, seed=0)
            be.generate_frame(fed_t, fed_m, params)  # the cache holds what the sentence fed
            be.reuse_prefix = reuse
            be.reset(1, seed=0)
            t = time.perf_counter()
            be.generate_frame(next_t, next_m, params)
            times[reuse].append(time.perf_counter() - t)
    return {
        "next_prompt_s": {k: statistics.median(v[1:]) for k, v in times.items()},
        "prefill_s": statistics.median(prefill),
        "frame_ms": statistics.median(frame_ms),
        "frame_ms_runs": frame_ms,
        "peak_gib": mx.get_peak_memory() / GIB,
    }


def slot_prompt(cfg: CSMConfig, length: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    tokens, mask = prompt(cfg, length, seed)
    return tokens[0], mask[0]


def bench_slots(model: CSMModel, slots: int, frames: int, runs: int, prompt_len: int, compiled: bool,
                codec, chunk_frames: int) -> dict:
    """One SlotModel run with `slots` slots all decoding; see the module docstring."""
    cfg = model.config
    K = cfg.audio_num_codebooks
    be = MlxBackend(cfg, model=model, compile=compiled)
    params = SamplingParams(temperature=0.9, topk=50)
    mx.reset_peak_memory()
    t = time.perf_counter()
    be.open_slots(slots)
    open_s = time.perf_counter() - t
    prompts = [slot_prompt(cfg, prompt_len + s % 16, seed=s) for s in range(slots)]
    for s, (tok, msk) in enumerate(prompts):
        be.admit(s, s, tok, msk)
    last = np.zeros((slots, K), np.int32)
    t = time.perf_counter()
    group = 32  # prompts prefilled per step
    for a in range(0, slots, group):
        feeds = [SlotFeed(s, *prompts[s], params) for s in range(a, min(slots, a + group))]
        last[a : a + len(feeds)] = be.step(feeds)
    prefill_s = time.perf_counter() - t
    mask = np.zeros((1, K + 1), bool)
    mask[0, :K] = True

    def step() -> np.ndarray:
        tokens = np.zeros((slots, 1, K + 1), np.int64)
        tokens[:, 0, :K] = last
        return be.step([SlotFeed(s, tokens[s], mask, params) for s in range(slots)])

    for _ in range(3):  # warm-up: compiled graphs for this row count, kernels
        last = step()
    step_ms = []
    for _ in range(runs):
        for _ in range(frames):
            t = time.perf_counter()
            last = step()
            step_ms.append(1e3 * (time.perf_counter() - t))
    out = {"open_s": open_s, "prefill_s": prefill_s, "step_ms": statistics.median(step_ms),
           "step_p90_ms": float(np.percentile(step_ms, 90)), "cache_gib": be._slots.cache.nbytes / GIB}
    be.reset(1)  # frees the slot caches before the codec runs
    if codec is not None:
        dec = codec.batch_streaming_decoder(slots)
        rng = np.random.default_rng(0)
        rows = list(range(slots))
        codec_ms = []
        for i in range(runs + 1):  # the first call builds the kernels
            codes = rng.integers(0, codec.codebook_size, (slots, K, chunk_frames))
            t = time.perf_counter()
            dec.decode(rows, codes)
            if i:
                codec_ms.append(1e3 * (time.perf_counter() - t) / chunk_frames)
        out["codec_ms"] = statistics.median(codec_ms)
        del dec
    out["peak_gib"] = mx.get_peak_memory() / GIB
    return out


def run_slots(args, cfg: CSMConfig, dtypes, quants, modes) -> None:
    from csm_core.config import mimi, mimi_tiny
    from csm_core.testing.mimi import random_mimi_weights
    from csm_mlx.mimi import MlxMimi

    counts = [int(n) for n in args.slots.split(",")]
    codec = None
    if args.chunk_frames > 0:
        mcfg = mimi_tiny() if args.config == "tiny" else mimi()
        codec = MlxMimi(mcfg, random_mimi_weights(mcfg, 0))
    print(f"slots: {args.frames} steps x {args.runs} runs per N, prompts of {args.prompt}..{args.prompt + 15} text "
          f"frames; Mimi decode in chunks of {args.chunk_frames} frames (0: off)\n")
    head = (f"{'impl':<14}{'dtype':<10}{'quant':<7}{'slots':>6}{'ms/step':>9}{'p90':>8}{'frames/s':>10}"
            f"{'f/s/stream':>11}{'mimi ms':>9}{'total ms':>9}{'RT streams':>11}{'KV GiB':>8}{'peak GiB':>10}{'prefill s':>10}")
    rows = [head, "-" * len(head)]
    print(head, flush=True)
    for dt in dtypes:
        for q in quants:
            model = random_model(cfg, dt, q, args.group_size)
            name = str(dt).split(".")[-1]
            for compiled in modes:
                for n in counts:
                    r = bench_slots(model, n, args.frames, args.runs, args.prompt, compiled, codec, args.chunk_frames)
                    codec_ms = r.get("codec_ms", float("nan"))
                    total = r["step_ms"] + (0.0 if codec is None else codec_ms)
                    rt = n if 1e3 / total >= REALTIME_FPS else 0
                    rows.append(
                        f"{'mlx-compiled' if compiled else 'mlx':<14}{name:<10}{(str(q) + 'b') if q else '-':<7}{n:>6}"
                        f"{r['step_ms']:>9.1f}{r['step_p90_ms']:>8.1f}{n * 1e3 / r['step_ms']:>10.0f}"
                        f"{1e3 / r['step_ms']:>11.1f}{codec_ms:>9.1f}{total:>9.1f}{rt:>11}{r['cache_gib']:>8.2f}"
                        f"{r['peak_gib']:>10.2f}{r['prefill_s']:>10.2f}"
                    )
                    print(rows[-1], flush=True)
                    mx.clear_cache()
            del model
            mx.clear_cache()
    print("\n" + "\n".join(rows))
    print(f"\nms/step: one SlotModel step, every slot feeding 1 row and sampling a frame; frames/s = slots / step; "
          f"mimi ms: batched streaming decode of all rows per frame step; RT streams: slots if model + codec "
          f"<= {1e3 / REALTIME_FPS:.0f} ms a step, else 0")


def bench_hf(cfg: CSMConfig, dtype_name: str, frames: int, runs: int, prompt_len: int) -> dict | str:
    """transformers' CsmForConditionalGeneration (random init, llama3 RoPE) on cuda if present, else cpu."""
    try:
        import torch
        from transformers import CsmConfig, CsmForConditionalGeneration
    except ImportError as e:
        return f"skipped ({e.name} not importable)"

    def rope(c, positions):
        r = positions / c.rope_old_context_len
        return {
            "rope_type": "llama3",
            "rope_theta": c.rope_base,
            "factor": c.rope_scale_factor,
            "low_freq_factor": c.rope_low_freq_factor * r,
            "high_freq_factor": c.rope_high_freq_factor * r,
            "original_max_position_embeddings": positions,
        }

    b, d = cfg.backbone, cfg.decoder
    depth = dict(
        num_codebooks=cfg.audio_num_codebooks, backbone_hidden_size=b.embed_dim, vocab_size=cfg.audio_vocab_size,
        hidden_size=d.embed_dim, intermediate_size=d.intermediate_dim, num_hidden_layers=d.num_layers,
        num_attention_heads=d.num_heads, num_key_value_heads=d.num_kv_heads,
        max_position_embeddings=cfg.audio_num_codebooks + 1, rms_norm_eps=d.norm_eps, rope_parameters=rope(d, 16),
    )
    hf_cfg = CsmConfig(
        num_codebooks=cfg.audio_num_codebooks, vocab_size=cfg.audio_vocab_size, text_vocab_size=cfg.text_vocab_size,
        hidden_size=b.embed_dim, intermediate_size=b.intermediate_dim, num_hidden_layers=b.num_layers,
        num_attention_heads=b.num_heads, num_key_value_heads=b.num_kv_heads, max_position_embeddings=b.max_seq_len,
        rms_norm_eps=b.norm_eps, rope_parameters=rope(b, 1024), depth_decoder_config=depth,
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype_name]
    torch.manual_seed(0)
    model = CsmForConditionalGeneration(hf_cfg).to(device=device, dtype=tdtype).eval()
    ids = torch.randint(0, cfg.text_vocab_size, (1, prompt_len), device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    kw = dict(do_sample=True, top_k=50, temperature=0.9, depth_decoder_do_sample=True, depth_decoder_top_k=50,
              depth_decoder_temperature=0.9)

    def timed(n):
        sync()
        t = time.perf_counter()
        with torch.no_grad():
            out = model.generate(input_ids=ids, max_new_tokens=n, min_new_tokens=n, **kw)
        sync()
        return time.perf_counter() - t, out

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    timed(2)  # warm-up
    per_frame, prefill = [], []
    for _ in range(runs):
        t1, _ = timed(1)
        tn, out = timed(frames + 1)
        per_frame.append(1e3 * (tn - t1) / frames)
        prefill.append(t1)
    peak = torch.cuda.max_memory_allocated() / GIB if device == "cuda" else float("nan")
    return {"device": device, "prefill_s": statistics.median(prefill), "frame_ms": statistics.median(per_frame),
            "frame_ms_runs": per_frame, "peak_gib": peak}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=["full", "tiny"], default="full", help="CSM-1B shapes or the tiny test model")
    ap.add_argument("--tiny", action="store_true", help="same as --config tiny (tiny CSM and Mimi: smoke tests)")
    ap.add_argument("--slots", help="N[,N...]: continuous-batching steps with N slots decoding (see above)")
    ap.add_argument("--chunk-frames", type=int, default=5, help="--slots: Mimi frames per decode call (0: no codec)")
    ap.add_argument("--dtype", action="append", help="float32/fp32, bfloat16/bf16, float16/fp16 (repeatable; default bf16)")
    ap.add_argument("--quant", action="append", default=[], help="'none', 4 or 8 (repeatable; default none)")
    ap.add_argument("--group-size", type=int, default=64, help="quantization group size (32, 64, 128)")
    ap.add_argument("--frames", type=int, default=20, help="timed frames per run")
    ap.add_argument("--runs", type=int, default=3, help="timed runs (after one warm-up run)")
    ap.add_argument("--prompt", type=int, default=64, help="prompt length in text frames")
    ap.add_argument("--device", choices=["default", "cpu", "gpu"], default="default")
    ap.add_argument("--compile", choices=["auto", "on", "off", "both"], default="auto",
                    help="mx.compile the depth decoder (auto: on a GPU only; both: time each)")
    ap.add_argument("--hf", action="store_true", help="also time transformers (torch) on cuda if present, else cpu")
    args = ap.parse_args(argv)
    if args.tiny:
        args.config = "tiny"
    if args.slots is not None and not all(n.strip().isdigit() and int(n) > 0 for n in args.slots.split(",")):
        ap.error(f"--slots wants positive integers separated by commas, got {args.slots!r}")

    if args.device != "default":
        mx.set_default_device(mx.cpu if args.device == "cpu" else mx.gpu)
    cfg = csm_1b() if args.config == "full" else csm_tiny()
    dtypes = [resolve_dtype(d) for d in (args.dtype or ["bfloat16"])]
    quants = [None if q == "none" else int(q) for q in (args.quant or ["none"])]
    dev = mx.default_device()
    info = mx.device_info() if hasattr(mx, "device_info") else {}
    print(f"mlx {mx.__version__} on {dev} ({info.get('device_name', '?')}), {platform.machine()} {platform.system()}")
    bw = read_bandwidth(0.25 if args.config == "tiny" else 1.0)
    print(f"measured read bandwidth: {bw:.1f} GB/s; CSM {args.config}: {cfg.num_parameters() / 1e9:.3f} G params")
    on_gpu = mx.default_device().type == mx.gpu
    modes = {"auto": [on_gpu], "on": [True], "off": [False], "both": [False, True]}[args.compile]
    if args.slots is not None:
        return run_slots(args, cfg, dtypes, quants, modes)
    print(f"{args.frames} frames x {args.runs} runs after a {args.prompt}-frame prompt; sampling T=0.9 top-k 50\n")
    head = f"{'impl':<14}{'dtype':<10}{'quant':<7}{'prefill s':>10}{'ms/frame':>10}{'frames/s':>10}{'x RT':>7}{'peak GiB':>10}{'GB/frame':>10}{'BW-limit f/s':>14}"
    rows, notes = [head, "-" * len(head)], []
    for dt in dtypes:
        for q in quants:
            model = random_model(cfg, dt, q, args.group_size)
            bpf = bytes_per_frame(model)
            name = str(dt).split(".")[-1]
            for compiled in modes:
                r = bench_mlx(model, args.frames, args.runs, args.prompt, compiled)
                fps = 1e3 / r["frame_ms"]
                rows.append(
                    f"{'mlx-compiled' if compiled else 'mlx':<14}{name:<10}{(str(q) + 'b') if q else '-':<7}"
                    f"{r['prefill_s']:>10.3f}{r['frame_ms']:>10.1f}{fps:>10.2f}{fps / REALTIME_FPS:>7.2f}"
                    f"{r['peak_gib']:>10.2f}{bpf / 1e9:>10.2f}{bw * 1e9 / bpf:>14.1f}"
                )
                print(rows[-1], f"  (runs: {', '.join(f'{m:.1f}' for m in r['frame_ms_runs'])} ms)", flush=True)
                reuse = r["next_prompt_s"]
                label = f"{'mlx-compiled' if compiled else 'mlx'} {name}{f' {q}-bit' if q else ''}"
                notes.append(f"{label}: next sentence's prompt ({args.prompt} + {args.frames} + 8 "
                             f"rows) to its first frame {reuse[True]:.3f} s reusing the cache, {reuse[False]:.3f} s "
                             "recomputing it")
            del model
            mx.clear_cache()
            if args.hf and q is None:
                h = bench_hf(cfg, name, args.frames, args.runs, args.prompt)
                if isinstance(h, str):
                    rows.append(f"{'transformers':<14}{name:<10}{h}")
                else:
                    fps = 1e3 / h["frame_ms"]
                    rows.append(
                        f"{'hf-' + h['device']:<14}{name:<10}{'-':<7}{h['prefill_s']:>10.3f}{h['frame_ms']:>10.1f}"
                        f"{fps:>10.2f}{fps / REALTIME_FPS:>7.2f}{h['peak_gib']:>10.2f}"
                    )
                print(rows[-1], flush=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024**2 if sys.platform != "darwin" else GIB)
    print("\n" + "\n".join(rows + [""] + notes))
    print(f"\nprocess max RSS {rss:.2f} GiB; real time = {REALTIME_FPS} frames/s; "
          "BW-limit = measured read bandwidth / weight bytes per frame (batch 1)")


if __name__ == "__main__":
    main()
