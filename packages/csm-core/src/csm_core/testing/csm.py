"""Random CSM models, test prompts and the committed oracle fixture (numpy only).

- `random_csm_weights(config, seed)`: a canonical (original Sesame names) float32 weight dict of
  the exact architecture. Weights N(0, 0.02), norm scales uniform in [0.9, 1.1], and the head
  entries for codes >= 2048 (which Mimi cannot decode) zeroed so that no reference picks them.
- `make_prompt(...)`: frame tokens/mask [1, S, K+1] for context segments (text + audio codes + an
  all-zero EOS frame) followed by target text, the layout of spec/csm.md §2.
- `run_frames(model, tokens, mask, n)`: n frames from any FrameModel, each fed back (no EOS stop).
- `load_oracle(name)`: reads `tests/fixtures/{name}_oracle.npz` written by `tools/make_reference.py`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..config import CSMConfig

__all__ = [
    "WEIGHT_STD",
    "random_csm_weights",
    "make_prompt",
    "fixtures_dir",
    "load_oracle",
    "oracle_weights",
    "frame_row",
    "run_frames",
]

WEIGHT_STD = 0.02
NORM_SCALE_SPREAD = 0.1
CODEC_SIZE = 2048  # Mimi codebook size; codes 2048..V-1 are never decodable


def random_csm_weights(config: CSMConfig, seed: int) -> dict[str, np.ndarray]:
    """Seeded random canonical weights {name: float32 array} for `config`.

    Tensors are drawn in `config.weight_shapes()` order from one `np.random.default_rng(seed)`, so
    the same (config, seed) always gives the same model.
    """
    rng = np.random.default_rng(seed)
    weights: dict[str, np.ndarray] = {}
    for name, shape in config.weight_shapes().items():
        if name.endswith(".scale"):  # RMSNorm scales
            w = rng.uniform(1.0 - NORM_SCALE_SPREAD, 1.0 + NORM_SCALE_SPREAD, size=shape).astype(np.float32)
        else:
            w = rng.standard_normal(size=shape, dtype=np.float32)
            w *= np.float32(WEIGHT_STD)
        weights[name] = w
    # Zero logits for undecodable codes: a random model would otherwise pick them ~3/2051 of the time.
    weights["codebook0_head.weight"][CODEC_SIZE:, :] = 0.0  # [V, Db]
    weights["audio_head"][:, :, CODEC_SIZE:] = 0.0  # [K-1, Dd, V]
    return weights


def make_prompt(
    config: CSMConfig,
    rng: np.random.Generator,
    context: Sequence[tuple[int, int]] = ((7, 5), (6, 4)),
    target_text_len: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """A random prompt: for each (text_len, audio_len) in `context`, text_len text frames, audio_len
    audio frames (codes in 1..2047) and one all-zero EOS audio frame; then target_text_len text frames.

    Returns tokens int64 [1, S, K+1] and mask bool [1, S, K+1] (column K = text, 0..K-1 = codebooks).
    """
    K = config.audio_num_codebooks
    rows_t: list[np.ndarray] = []
    rows_m: list[np.ndarray] = []

    def text(n: int) -> None:
        t = np.zeros((n, K + 1), np.int64)
        t[:, K] = rng.integers(0, config.text_vocab_size, size=n)
        m = np.zeros((n, K + 1), bool)
        m[:, K] = True
        rows_t.append(t)
        rows_m.append(m)

    def audio(n: int) -> None:
        t = np.zeros((n + 1, K + 1), np.int64)  # the last row stays all zero: the EOS frame
        t[:n, :K] = rng.integers(1, CODEC_SIZE, size=(n, K))
        m = np.zeros((n + 1, K + 1), bool)
        m[:, :K] = True
        rows_t.append(t)
        rows_m.append(m)

    for text_len, audio_len in context:
        text(text_len)
        audio(audio_len)
    text(target_text_len)
    return np.concatenate(rows_t)[None], np.concatenate(rows_m)[None]


def fixtures_dir() -> Path:
    """The repository's tests/fixtures: $CSM_FIXTURES if set, else found above this file."""
    env = os.environ.get("CSM_FIXTURES")
    if env:
        return Path(env)
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "tests" / "fixtures"
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        "cannot locate tests/fixtures above csm_core (installed non-editable?); set CSM_FIXTURES to the directory"
    )


def load_oracle(name: str = "csm_tiny") -> dict[str, Any]:
    """The committed oracle outputs for `name` as a dict.

    Keys as stored (see tools/make_reference.py): seed (int), config_json (str), tokens int64
    [1,S,K+1], mask bool [1,S,K+1], backbone_hidden f32 [1,S,Db], c0_logits f32 [1,V], tf_codes int32
    [1,K], depth_logits f32 [1,K-1,V], greedy_frames int32 [N,K]; plus `config` (the parsed CSMConfig).
    """
    path = fixtures_dir() / f"{name}_oracle.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: oracle fixture not found; regenerate it with tools/make_reference.py")
    with np.load(path, allow_pickle=False) as z:
        out: dict[str, Any] = {k: z[k] for k in z.files}
    out["seed"] = int(out["seed"])
    out["config_json"] = str(out["config_json"])
    out["config"] = CSMConfig.from_dict(json.loads(out["config_json"]), source=str(path))
    return out


def oracle_weights(oracle: dict[str, Any]) -> dict[str, np.ndarray]:
    """The random weights an oracle fixture was computed with (regenerated from its seed)."""
    return random_csm_weights(oracle["config"], oracle["seed"])


def frame_row(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Generated codes [B, K] → the next input tokens/mask [B, 1, K+1] (codes, text column off)."""
    B, K = codes.shape
    tokens = np.zeros((B, 1, K + 1), np.int64)
    tokens[:, 0, :K] = codes
    mask = np.zeros((B, 1, K + 1), bool)
    mask[:, 0, :K] = True
    return tokens, mask


def run_frames(model, tokens: np.ndarray, mask: np.ndarray, n_frames: int, params=None, seed: int | None = 0) -> np.ndarray:
    """reset(B, seed), feed the prompt, then each frame back: codes int32 [B, n_frames, K].

    No stop rule, as in the oracle's `greedy_frames` (random weights rarely emit an EOS frame).
    `params` defaults to greedy with no masking of undecodable codes (what HF generate does).
    """
    from ..protocols import SamplingParams

    if params is None:
        params = SamplingParams(temperature=0.0, mask_undecodable=False)
    model.reset(tokens.shape[0], seed)
    frames = [model.generate_frame(tokens, mask, params)]
    for _ in range(n_frames - 1):
        frames.append(model.generate_frame(*frame_row(frames[-1]), params))
    return np.stack(frames, axis=1).astype(np.int32)
