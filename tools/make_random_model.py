#!/usr/bin/env python
"""Random weights of CSM-1B's and Mimi's real shapes (or the tiny test shapes) laid out as a model
`csm` loads, for benchmarks and load tests where the released weights are not available:

    DIR/model.safetensors   csm_1b() random weights (seed 0) in --dtype f32 | bf16   (default layout)
    DIR/csm-1b-random-QUANT.gguf   instead, with --gguf QUANT: csm-cpu's file in that format
    DIR/config.json         the CSM config + Mimi's codec_config
    DIR/mimi.safetensors    mimi() random weights (seed 1)
    DIR/tokenizer.model     the Llama-3 tokenizer (from --tokenizer, $CSM_BENCH_TOKENIZER or the
                            test data beside the checkout: ../shared/testdata/llama3)

    python tools/make_random_model.py --out /tmp/csm-random --dtype bf16
    csm serve --model /tmp/csm-random --backend mlx --quant bf16 --no-watermark
    python tools/make_random_model.py --out /tmp/csm-q4 --gguf q4_0    # prints the .gguf path

Files already there are kept (delete DIR to write new ones). Full size needs about 6 GB of memory
while the weights are made.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for pkg in ("csm-core", "csm-cpu", "csm-audio", "csm-tokenizers", "csm-app"):
    src = ROOT / "packages" / pkg / "src"
    if src.is_dir() and str(src) not in sys.path:
        sys.path.append(str(src))
if str(ROOT / "tests" / "app") not in sys.path:
    sys.path.append(str(ROOT / "tests" / "app"))


def find_tokenizer(given: str | None = None) -> Path:
    from app_helpers import LLAMA3_TOKENIZER

    for candidate in (given, os.environ.get("CSM_BENCH_TOKENIZER"), LLAMA3_TOKENIZER):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise SystemExit(f"the Llama-3 tokenizer.model is not at {LLAMA3_TOKENIZER}: give --tokenizer FILE "
                     "(or set CSM_BENCH_TOKENIZER=FILE)")  # fmt: skip


def write_model(out: Path, config: str = "full", dtype: str = "f32", gguf: str | None = None,
                tokenizer: str | None = None) -> dict:  # fmt: skip
    """Write what is missing under `out`; returns {"model", "mimi", "tokenizer"} paths for CSM.load."""
    import numpy as np

    from app_helpers import hf_mimi_config
    from csm_core import csm_1b, csm_tiny, mimi, mimi_tiny
    from csm_core.testing.csm import random_csm_weights
    from csm_core.testing.mimi import random_mimi_weights
    from csm_core.weights import save_safetensors

    cfg, mcfg = (csm_1b(), mimi()) if config == "full" else (csm_tiny(), mimi_tiny())
    out.mkdir(parents=True, exist_ok=True)
    tok = out / "tokenizer.model"
    if not tok.is_file():
        shutil.copy(find_tokenizer(tokenizer), tok)
    mimi_file = out / "mimi.safetensors"
    if not mimi_file.is_file():
        save_safetensors(mimi_file, random_mimi_weights(mcfg, seed=1))
    conf = out / "config.json"
    if not conf.is_file():
        conf.write_text(json.dumps({**cfg.to_dict(), "codec_config": hf_mimi_config(mcfg)}, indent=2) + "\n")
    t = time.perf_counter()
    if gguf:
        model = out / f"csm-{config}-random-{gguf}.gguf"
        if not model.is_file():
            from csm_cpu.backend import CpuBackend

            tmp = model.with_name(model.name + ".tmp")
            CpuBackend.convert(cfg, random_csm_weights(cfg, seed=0), tmp, quant=gguf)
            tmp.rename(model)
            print(f"# wrote {model} ({model.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t:.0f} s",
                  file=sys.stderr, flush=True)  # fmt: skip
        return {"model": str(model), "mimi": str(mimi_file), "tokenizer": str(tok)}
    weights = out / "model.safetensors"
    if not weights.is_file():
        w = random_csm_weights(cfg, seed=0)
        if dtype == "bf16":
            import ml_dtypes

            w = {k: v.astype(ml_dtypes.bfloat16) if v.dtype == np.float32 else v for k, v in w.items()}
        save_safetensors(weights, w)
        del w
        print(f"# wrote {weights} ({weights.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t:.0f} s",
              file=sys.stderr, flush=True)  # fmt: skip
    return {"model": str(out), "mimi": str(mimi_file), "tokenizer": str(tok)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--config", choices=["full", "tiny"], default="full")
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32", help="model.safetensors' dtype")
    ap.add_argument("--gguf", metavar="QUANT", help="write csm-cpu's .gguf in this format instead (q4_0, q8_0, ...)")
    ap.add_argument("--tokenizer", help="the Llama-3 tokenizer.model to copy beside the weights")
    args = ap.parse_args()
    paths = write_model(Path(args.out), args.config, args.dtype, args.gguf, args.tokenizer)
    print(paths["model"])


if __name__ == "__main__":
    main()
