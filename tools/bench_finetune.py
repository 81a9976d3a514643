#!/usr/bin/env python
"""Benchmark CSM fine-tuning in MLX: training frames/s and peak memory, LoRA and full, random weights.

Runs from a checkout with only mlx installed (csm-core and csm-mlx are put on sys.path), on any
MLX device (CUDA with mlx[cuda], Apple GPU, CPU). One optimizer step = forward + backward of the
transformers CSM loss over a batch of B sequences of S frames (audio frames after a few text
frames, the decoder trained on --decoder-fraction of them), clipping and AdamW on float32 state.
frames/s counts every position of the batch (text and audio frames) per second of step time
(median over --steps after --warmup steps). With --hf, transformers `CsmForConditionalGeneration`
(+ PEFT for LoRA) does the same steps through torch on the same kind of device, as the peer
(torch AdamW keeps its state in the model dtype; ours is float32 with a float32 master copy).
Peak memory: MLX peak allocation; torch on CUDA max_memory_allocated, on the CPU the process peak RSS.

    python tools/bench_finetune.py                       # tiny config, fp32, LoRA r16 + full (smoke)
    python tools/bench_finetune.py --full                # CSM-1B shapes, bf16, B=4 S=512, LoRA r16 + full
    python tools/bench_finetune.py --full --hf           # + transformers/PEFT peer (torch, CUDA if present)
    python tools/bench_finetune.py --full --mode lora --batch 8 --seq 256
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import resource
import statistics
import sys
import tempfile
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
from csm_mlx.model import CSMModel, resolve_dtype  # noqa: E402
from csm_mlx.training.lora import LoraConfig  # noqa: E402
from csm_mlx.training.loss import amortize, frame_labels  # noqa: E402
from csm_mlx.training.trainer import Example, TrainConfig, Trainer  # noqa: E402

GIB = 1024**3
TEXT_FRAMES = 16


def random_model(cfg: CSMConfig, dtype, seed: int = 0) -> CSMModel:
    """N(0, 0.02) weights drawn on the device in dtype, norm scales 1."""
    mx.random.seed(seed)
    model = CSMModel(cfg)
    weights = []
    for name, shape in cfg.weight_shapes().items():
        w = mx.ones(shape, dtype) if name.endswith(".scale") else (0.02 * mx.random.normal(shape)).astype(dtype)
        mx.eval(w)
        weights.append((name, w))
    model.load_weights(weights, strict=True)
    return model


def synthetic_examples(cfg: CSMConfig, n: int, seq: int, seed: int = 0) -> list[Example]:
    """n sequences of `seq` frames: TEXT_FRAMES text frames, then audio frames (codes 1..2047) and an EOS frame."""
    K = cfg.audio_num_codebooks
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        tokens = np.zeros((seq, K + 1), np.int32)
        mask = np.zeros((seq, K + 1), bool)
        tokens[:TEXT_FRAMES, K] = rng.integers(0, cfg.text_vocab_size, TEXT_FRAMES)
        mask[:TEXT_FRAMES, K] = True
        tokens[TEXT_FRAMES:-1, :K] = rng.integers(1, 2048, (seq - TEXT_FRAMES - 1, K))
        mask[TEXT_FRAMES:, :K] = True
        out.append(Example(tokens, mask, str(i)))
    return out


def bench_mlx(cfg, mode: str, args) -> dict:
    dtype = resolve_dtype(args.dtype)
    model = random_model(cfg, dtype)
    lora = LoraConfig(rank=args.rank, alpha=2 * args.rank) if mode == "lora" else None
    steps = args.warmup + args.steps
    tc = TrainConfig(steps=steps, batch_size=args.batch, lr=1e-5, decoder_fraction=args.decoder_fraction,
                     eval_every=10**9, save_every=10**9, lora=lora)
    examples = synthetic_examples(cfg, args.batch, args.seq)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model, examples, [], tc, out, log=lambda s: None)
        trainable = sum(v.size for v in trainer.opt.master.values())
        times = []
        for step in range(steps):
            if step == args.warmup:
                mx.reset_peak_memory()
            t0 = time.perf_counter()
            row = trainer.train_step(step)
            times.append(time.perf_counter() - t0)
        peak = mx.get_peak_memory()
    dt = statistics.median(times[args.warmup:])
    return {"impl": "mlx", "mode": mode, "trainable": trainable, "step_s": dt,
            "fps": args.batch * args.seq / dt, "peak_gib": peak / GIB, "loss": row["loss"]}


def hf_embed(model, tokens, mask):
    """Σ over the 33 columns of (embedding ⊙ mask) with transformers' own tables (as tools/make_reference.py)."""
    K = model.config.num_codebooks
    text = model.embed_text_tokens(tokens[..., K]) * mask[..., K, None]
    audio_tokens = tokens[..., :K] + model.backbone_model.embed_tokens.audio_tokens_offsets
    return text + (model.backbone_model.embed_tokens.embed_audio_tokens(audio_tokens) * mask[..., :K, None]).sum(2)


def bench_hf(cfg, mode: str, args) -> dict | None:
    """transformers (+ PEFT for LoRA) on the same batches; None where it is not installed."""
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
        print("--hf: torch/transformers not installed; skipped", file=sys.stderr)
        return None
    if mode == "lora" and importlib.util.find_spec("peft") is None:
        print("--hf: peft not installed; LoRA peer skipped", file=sys.stderr)
        return None
    import torch
    from transformers import CsmForConditionalGeneration

    spec = importlib.util.spec_from_file_location("make_reference", ROOT / "tools" / "make_reference.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[str(args.dtype_name)]
    torch.manual_seed(0)
    model = CsmForConditionalGeneration(tool.hf_config(cfg, full=False)).to(device=device, dtype=tdtype)
    del model.codec_model  # not used by the loss; keeps the memory comparable
    model.train()
    if mode == "lora":
        from peft import LoraConfig as PeftLora, get_peft_model

        targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        model = get_peft_model(model, PeftLora(r=args.rank, lora_alpha=2 * args.rank, target_modules=targets))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    ex = synthetic_examples(cfg, args.batch, args.seq)
    tokens = np.stack([e.tokens for e in ex]).astype(np.int64)
    mask = np.stack([e.mask for e in ex])
    base = model.get_base_model() if mode == "lora" else model
    t_tokens, t_mask = torch.from_numpy(tokens).to(device), torch.from_numpy(mask).to(device=device, dtype=tdtype)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times = []
    for step in range(args.warmup + args.steps):
        if step == args.warmup and device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        labels = amortize(frame_labels(tokens, mask), args.decoder_fraction, np.random.default_rng(step))
        sync()
        t0 = time.perf_counter()
        out = model(inputs_embeds=hf_embed(base, t_tokens, t_mask), labels=torch.from_numpy(labels).to(device), use_cache=False)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        times.append(time.perf_counter() - t0)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / GIB
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB  # process peak RSS (CPU)
    dt = statistics.median(times[args.warmup:])
    return {"impl": f"hf+{'peft' if mode == 'lora' else 'torch'} ({device})", "mode": mode,
            "trainable": sum(p.numel() for p in params), "step_s": dt, "fps": args.batch * args.seq / dt,
            "peak_gib": peak, "loss": out.loss.item()}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--full", action="store_true", help="CSM-1B shapes, bf16, batch 4 x 512 frames")
    p.add_argument("--mode", choices=["lora", "full", "both"], default="both")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--dtype", default=None, help="float32 / bfloat16 (default: bf16 with --full, else fp32)")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--seq", type=int, default=None, help="frames per sequence (text + audio)")
    p.add_argument("--decoder-fraction", type=float, default=1 / 16)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--hf", action="store_true", help="also transformers (+ PEFT) through torch as the peer")
    args = p.parse_args(argv)
    cfg = csm_1b() if args.full else csm_tiny()
    args.dtype = args.dtype or ("bfloat16" if args.full else "float32")
    args.dtype_name = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(args.dtype, args.dtype)
    args.batch = args.batch or (4 if args.full else 2)
    args.seq = args.seq or (512 if args.full else 64)
    modes = ["lora", "full"] if args.mode == "both" else [args.mode]
    print(f"device {mx.default_device()} ({platform.machine()}, mlx {mx.__version__}); "
          f"{'CSM-1B' if args.full else 'tiny'} {args.dtype_name}, batch {args.batch} x {args.seq} frames, "
          f"decoder on {args.decoder_fraction:.3g} of audio frames, LoRA rank {args.rank} (all 7 projections)", flush=True)
    rows = []
    for mode in modes:
        rows.append(bench_mlx(cfg, mode, args))
        mx.clear_cache()
        if args.hf:
            r = bench_hf(cfg, mode, args)
            if r:
                rows.append(r)
    print(f"{'impl':<24} {'mode':<5} {'trainable':>13} {'step s':>8} {'frames/s':>10} {'peak GiB':>9} {'loss':>8}")
    for r in rows:
        print(f"{r['impl']:<24} {r['mode']:<5} {r['trainable']:>13,} {r['step_s']:>8.3f} {r['fps']:>10.1f} "
              f"{r['peak_gib']:>9.2f} {r['loss']:>8.3f}")


if __name__ == "__main__":
    main()
