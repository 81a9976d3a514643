"""Find, read, rename and validate CSM and Mimi checkpoints: the entry points backends and the app use.

Directory resolution (first match wins):
- CSM: `model.safetensors`, `model.safetensors.index.json`, `transformers.safetensors.index.json`,
  `ckpt.pt`, else the only `*.safetensors` / `*.pt` file. In the sesame/csm-1b snapshot, which holds
  both layouts, this picks the original `model.safetensors`: exactly the 187 CSM tensors, canonical
  names, no RoPE permutation and no codec bytes to skip.
- Mimi: a Kyutai `tokenizer-*.safetensors`, then `model.safetensors(.index.json)` if it holds Mimi
  tensors (a `kyutai/mimi` or HF CSM `save_pretrained` directory), then
  `transformers.safetensors.index.json` (the sesame/csm-1b snapshot's `codec_model.*`).
Configs come from the `config` argument, else `config.json` beside the weights (original or HF
form), else the released presets (`csm_1b()`, `mimi()`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import numpy as np

from ..config import CSMConfig, ConfigError, MimiConfig, csm_1b, mimi
from .csm_layout import CODEC_PREFIX, csm_hf_to_canonical, detect_csm_layout, split_codec, strip_wrapper_prefix
from .dtypes import convert_weights
from .errors import CheckpointError
from .mimi_layout import detect_mimi_layout, mimi_config_from_hf, mimi_hf_to_canonical
from .mimi_shapes import mimi_weight_shapes
from .safetensors_io import read_safetensors, read_safetensors_header, read_safetensors_index
from .torch_pt import read_torch_checkpoint
from .validate import validate_weights

__all__ = [
    "read_tensors",
    "tensor_names",
    "find_csm_weights",
    "find_mimi_weights",
    "load_csm_checkpoint",
    "load_mimi_checkpoint",
    "mimi_config_beside",
]

_CSM_FILES = ("model.safetensors", "model.safetensors.index.json", "transformers.safetensors.index.json", "ckpt.pt")
_PT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")


def read_tensors(path: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of one checkpoint file, memory-mapped where possible, by its stored name.

    Accepts `.safetensors`, a sharded set's `*.index.json`, or a zip `.pt`/`.pth`/`.bin`.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: file not found")
    if path.name.endswith(".index.json"):
        return read_safetensors_index(path)[0]
    if path.suffix == ".safetensors":
        return read_safetensors(path)[0]
    if path.suffix in _PT_SUFFIXES:
        return read_torch_checkpoint(path)
    raise CheckpointError(f"{path}: unknown checkpoint format (expected .safetensors, *.index.json or a zip .pt)")


def tensor_names(path: str | Path) -> set[str]:
    """Tensor names of a checkpoint file, reading only headers/indexes where the format allows."""
    path = Path(path)
    if path.name.endswith(".index.json"):
        try:
            return set(json.loads(path.read_bytes())["weight_map"])
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as e:
            raise CheckpointError(f"{path}: unreadable index ({e})") from None
    if path.suffix == ".safetensors":
        return set(read_safetensors_header(path)[0])
    return set(read_tensors(path))


def find_csm_weights(directory: str | Path) -> Path:
    """The CSM weight file (or index) of a directory, by the order in the module docstring."""
    directory = Path(directory)
    for name in _CSM_FILES:
        if (directory / name).is_file():
            return directory / name
    found = sorted(p for p in directory.iterdir() if p.suffix == ".safetensors" or p.suffix in _PT_SUFFIXES)
    if len(found) == 1:
        return found[0]
    several = f"; several candidates, pass one: {[p.name for p in found]}" if found else ""
    raise CheckpointError(f"{directory}: no CSM weights found (looked for {list(_CSM_FILES)}{several})")


def _is_mimi(names: set[str]) -> bool:
    try:
        detect_mimi_layout(names)
        return True
    except CheckpointError:
        return False


def _has_mimi(path: Path) -> bool:
    names = tensor_names(path)
    return _is_mimi(names) or _is_mimi({n[len(CODEC_PREFIX) :] for n in names if n.startswith(CODEC_PREFIX)})


def find_mimi_weights(directory: str | Path) -> Path:
    """The Mimi weight file (or index) of a directory, by the order in the module docstring."""
    directory = Path(directory)
    candidates = sorted(directory.glob("tokenizer-*.safetensors")) + [
        directory / n for n in ("model.safetensors", "model.safetensors.index.json", "transformers.safetensors.index.json")
    ]
    for path in candidates:
        if path.is_file() and _has_mimi(path):
            return path
    raise CheckpointError(
        f"{directory}: no Mimi weights found (looked for tokenizer-*.safetensors, model.safetensors[.index.json] "
        "with Mimi tensors, transformers.safetensors.index.json with codec_model.*)"
    )


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as e:  # RecursionError: JSON nested too deeply
        raise CheckpointError(f"{path}: unreadable config ({type(e).__name__}: {e})") from None


def load_csm_checkpoint(
    path: str | Path,
    config: CSMConfig | str | Path | None = None,
    *,
    dtype: str | np.dtype | None = None,
    check_finite: bool = True,
) -> tuple[CSMConfig, dict[str, np.ndarray]]:
    """Load CSM weights as (config, canonical weight dict), strictly validated.

    path: a directory (original layout, HF `save_pretrained`, or the sesame/csm-1b snapshot),
    a `.safetensors` / `*.index.json` / zip `.pt` file. config: a CSMConfig or a config.json path;
    default `config.json` beside the weights, else `csm_1b()`. dtype: cast floating tensors
    (e.g. "float32"); None keeps the stored dtype (memory-mapped, read-only arrays).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    weights_path = find_csm_weights(path) if path.is_dir() else path
    cfg = _csm_config(config, weights_path.parent)
    preset_hint = "" if config is not None or (weights_path.parent / "config.json").is_file() else (
        "\n  (no config.json beside the weights: assumed the CSM-1B preset; pass config= if this is another model)"
    )
    raw = strip_wrapper_prefix(read_tensors(weights_path))
    source = str(weights_path)
    layout = detect_csm_layout(raw, source)
    try:
        if layout == "hf":
            weights = csm_hf_to_canonical(raw, cfg, source)
        else:
            weights, _codec = split_codec(raw)
        validate_weights(cfg.weight_shapes(), weights, f"{source} ({layout} CSM layout)", check_finite=check_finite)
    except CheckpointError as e:
        raise CheckpointError(f"{e}{preset_hint}") from None
    return cfg, (convert_weights(weights, dtype) if dtype is not None else weights)


def _csm_config(config: CSMConfig | str | Path | None, directory: Path) -> CSMConfig:
    if isinstance(config, CSMConfig):
        return config
    path = Path(config) if config is not None else directory / "config.json"
    if config is None and not path.is_file():
        return csm_1b()
    try:
        return CSMConfig.from_json(path)
    except ConfigError as e:
        raise CheckpointError(str(e)) from None


def load_mimi_checkpoint(
    path: str | Path,
    config: MimiConfig | None = None,
    *,
    dtype: str | np.dtype | None = None,
    check_finite: bool = True,
) -> dict[str, np.ndarray]:
    """Load Mimi weights as a canonical (Kyutai-named) dict, strictly validated.

    path: a Kyutai `.safetensors`/`.pt`, an HF `kyutai/mimi` directory or file, an HF CSM
    directory/file/index (its `codec_model.*` tensors), or the sesame/csm-1b snapshot.
    config: default from `config.json` beside the weights (HF Mimi, or a CSM `codec_config`),
    else `mimi()`.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    weights_path = find_mimi_weights(path) if path.is_dir() else path
    cfg = config or mimi_config_beside(weights_path) or mimi()
    preset_hint = "" if config is not None or (weights_path.parent / "config.json").is_file() else (
        "\n  (no config.json beside the weights: assumed the released Mimi preset; pass config= if this is another model)"
    )
    try:
        weights = canonical_mimi_weights(read_tensors(weights_path), cfg, str(weights_path), check_finite=check_finite)
    except CheckpointError as e:
        raise CheckpointError(f"{e}{preset_hint}") from None
    return convert_weights(weights, dtype) if dtype is not None else weights


def canonical_mimi_weights(
    weights: Mapping[str, np.ndarray], config: MimiConfig, source: str = "weights", *, check_finite: bool = True
) -> dict[str, np.ndarray]:
    """An in-memory Mimi weight dict in any supported layout (Kyutai, HF flat or nested, an HF CSM
    checkpoint's `codec_model.*`) → canonical Kyutai names, strictly validated; dtypes kept."""
    _, codec = split_codec(weights)
    raw = codec or dict(weights)
    layout = detect_mimi_layout(raw, source)
    canon = mimi_hf_to_canonical(raw, config, source)
    validate_weights(mimi_weight_shapes(config), canon, f"{source} ({layout} Mimi layout)", check_finite=check_finite)
    return canon


def mimi_config_beside(path: str | Path) -> MimiConfig | None:
    """The Mimi config a `config.json` describes (an HF Mimi config, or a CSM config's
    `codec_config`), else None. path: a weight file (the config.json beside it is read), a
    directory (its config.json), or a `.json` config file itself."""
    path = Path(path)
    if path.is_dir():
        cfg_path = path / "config.json"
    else:
        cfg_path = path if path.suffix == ".json" and not path.name.endswith(".index.json") else path.parent / "config.json"
    data = _read_json(cfg_path)
    if isinstance(data, Mapping):
        if data.get("model_type") == "mimi":
            return mimi_config_from_hf(data, str(cfg_path))
        if isinstance(data.get("codec_config"), Mapping):
            return mimi_config_from_hf(data["codec_config"], f"{cfg_path} codec_config")
    return None
