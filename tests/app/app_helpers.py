"""Helpers for the csm-app tests: tiny random models laid out on disk, a temporary HF cache, the CLI.

`write_tiny_model` (torch-free): the original layout — model.safetensors (csm_tiny random weights),
config.json (original fields + the Mimi `codec_config` in Hugging Face form), mimi.safetensors
(mimi_tiny random weights, Kyutai names) and the real Llama-3 tokenizer.model beside them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
# beside the main checkout (/work/main -> /work/shared); a worktree elsewhere sets CSM_TEST_SHARED
LLAMA3_TOKENIZER = Path(os.environ.get("CSM_TEST_SHARED", REPO.parent / "shared")) / "testdata" / "llama3" / "tokenizer.model"
CSM_SEED = 0
MIMI_SEED = 1
REVISION = "0123456789abcdef0123456789abcdef01234567"


def hf_mimi_config(cfg) -> dict:
    """The Hugging Face MimiConfig dict of a csm_core MimiConfig (what a CSM config.json's codec_config holds)."""
    return {
        "model_type": "mimi",
        "sampling_rate": cfg.sample_rate,
        "frame_rate": cfg.frame_rate,
        "audio_channels": cfg.channels,
        "hidden_size": cfg.dimension,
        "num_filters": cfg.n_filters,
        "upsampling_ratios": list(cfg.ratios),
        "kernel_size": cfg.kernel_size,
        "last_kernel_size": cfg.last_kernel_size,
        "residual_kernel_size": cfg.residual_kernel_size,
        "compress": cfg.compress,
        "num_hidden_layers": cfg.num_transformer_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_heads,
        "head_dim": cfg.dimension // cfg.num_heads,
        "intermediate_size": cfg.dim_feedforward,
        "sliding_window": cfg.context,
        "rope_theta": cfg.rope_max_period,
        "norm_eps": cfg.norm_eps,
        "num_quantizers": cfg.num_codebooks,
        "num_semantic_quantizers": cfg.num_semantic,
        "codebook_size": cfg.codebook_size,
        "codebook_dim": cfg.codebook_dim,
        "vector_quantization_hidden_dimension": cfg.codebook_dim,
        "upsample_groups": cfg.dimension,
    }


def require_tokenizer() -> Path:
    if not LLAMA3_TOKENIZER.is_file():
        pytest.skip(f"the real Llama-3 tokenizer is not at {LLAMA3_TOKENIZER}")
    return LLAMA3_TOKENIZER


def write_tiny_model(directory: Path, *, tokenizer: bool = True) -> Path:
    from csm_core import csm_tiny, mimi_tiny
    from csm_core.testing.csm import random_csm_weights
    from csm_core.testing.mimi import random_mimi_weights
    from csm_core.weights import save_safetensors

    directory.mkdir(parents=True, exist_ok=True)
    config = csm_tiny()
    save_safetensors(directory / "model.safetensors", random_csm_weights(config, CSM_SEED))
    save_safetensors(directory / "mimi.safetensors", random_mimi_weights(mimi_tiny(), MIMI_SEED))
    data = {**config.to_dict(), "codec_config": hf_mimi_config(mimi_tiny())}
    (directory / "config.json").write_text(json.dumps(data, indent=2) + "\n")
    if tokenizer:
        shutil.copy(require_tokenizer(), directory / "tokenizer.model")
    return directory


def place_in_cache(cache: Path, repo_id: str, source: Path, revision: str = REVISION) -> Path:
    """Lay `source`'s files out as huggingface_hub does: models--org--name/snapshots/<rev>/ + refs/main."""
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo_dir / "snapshots" / revision
    snap.mkdir(parents=True, exist_ok=True)
    for f in source.iterdir():
        if f.is_file():
            (snap / f.name).symlink_to(f.resolve())  # the hub cache links snapshots to blobs too
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(revision)
    return snap


def run_csm(*args: str, env: dict | None = None, input: bytes | None = None, cwd: Path | None = None):
    """`csm ARGS` as a real subprocess (the console script of this interpreter's environment)."""
    script = Path(sys.executable).with_name("csm")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "csm_app.cli"]
    full_env = {**os.environ, "CSM_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(cmd + list(args), capture_output=True, env=full_env, input=input, cwd=cwd, timeout=300)


def wav_info(path: Path) -> tuple[np.ndarray, int, int]:
    import soundfile as sf

    audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return audio[:, 0], sr, audio.shape[1]
