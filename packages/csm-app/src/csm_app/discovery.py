"""Find a model's files: a directory, or a Hugging Face repo id in the local hub cache.

Recognised arrangements (spec/csm.md §3):
- the real ``sesame/csm-1b`` snapshot: original ``model.safetensors``/``ckpt.pt`` beside the
  ``transformers.safetensors.index.json`` shards (which also carry Mimi as ``codec_model.*``)
  and ``tokenizer.json``;
- a ``save_pretrained`` Hugging Face CSM directory (``config.json`` with ``model_type: csm``,
  ``model.safetensors`` or an index, Mimi inside);
- the original layout (``model.safetensors`` or ``ckpt.pt`` + ``config.json``), with Mimi and the
  tokenizer given explicitly or found beside it or in the hub cache.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ModelFiles", "ModelNotFound", "hub_cache_dir", "find_snapshot", "resolve_model"]

DEFAULT_MODEL = "sesame/csm-1b"
MIMI_REPO = "kyutai/moshiko-pytorch-bf16"
MIMI_FILE = "tokenizer-e351c8d8-checkpoint125.safetensors"
TOKENIZER_REPOS = ("meta-llama/Llama-3.2-1B", "unsloth/Llama-3.2-1B")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "original/tokenizer.model")
HF_INDEX = "transformers.safetensors.index.json"


class ModelNotFound(FileNotFoundError):
    """What was looked for, where, and how to get it."""


@dataclass
class ModelFiles:
    root: Path
    weights: Path  # a file or an index.json
    layout: str  # "original" or "hf"
    config: Path | None
    mimi: Path | None
    tokenizer: Path | None
    looked: list[str] = field(default_factory=list)


def hub_cache_dir() -> Path:
    """HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub (huggingface_hub's rule)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def is_repo_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not Path(name).exists() and not name.startswith((".", "/", "~"))


def find_snapshot(repo_id: str, cache: Path | None = None) -> Path | None:
    """The cached snapshot of repo_id: the revision refs/main points at, else the newest one."""
    cache = cache or hub_cache_dir()
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    snaps = repo_dir / "snapshots"
    if not snaps.is_dir():
        return None
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        rev = ref.read_text().strip()
        if (snaps / rev).is_dir():
            return snaps / rev
    candidates = sorted((p for p in snaps.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    return candidates[-1] if candidates else None


def download_snapshot(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ModelNotFound(
            f"{repo_id} is not in the local Hugging Face cache ({hub_cache_dir()}) and the hub client is not "
            "installed: `pip install 'csm-app[hub]'` to download it, or pass --model DIR"
        ) from None
    return Path(snapshot_download(repo_id))


def _first(root: Path, names: tuple[str, ...], looked: list[str]) -> Path | None:
    for n in names:
        p = root / n
        looked.append(str(p))
        if p.is_file():
            return p
    return None


def _config_kind(path: Path) -> str | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if data.get("model_type") == "csm":
        return "hf"
    if "backbone_flavor" in data:
        return "original"
    return None


def _cached_file(repos: tuple[str, ...], names: tuple[str, ...], looked: list[str]) -> Path | None:
    for repo in repos:
        snap = find_snapshot(repo)
        if snap is None:
            looked.append(f"{hub_cache_dir()}/models--{repo.replace('/', '--')} (not cached)")
            continue
        hit = _first(snap, names, looked)
        if hit:
            return hit
    return None


def resolve_model(
    model: str | os.PathLike = DEFAULT_MODEL,
    *,
    mimi: str | os.PathLike | None = None,
    tokenizer: str | os.PathLike | None = None,
    offline: bool = False,
    need_codec: bool = True,
    need_tokenizer: bool = True,
) -> ModelFiles:
    """Locate weights, config, Mimi and tokenizer for `model` (a directory, file or repo id)."""
    looked: list[str] = []
    name = str(model)
    path = Path(name).expanduser()
    if path.exists():
        root = path if path.is_dir() else path.parent
    elif is_repo_id(name):
        snap = find_snapshot(name)
        looked.append(f"{hub_cache_dir()}/models--{name.replace('/', '--')}/snapshots/*")
        if snap is None:
            if offline or os.environ.get("HF_HUB_OFFLINE") == "1":
                raise ModelNotFound(_missing_message(name, looked, offline=True))
            snap = download_snapshot(name)
        root = snap
    else:
        raise ModelNotFound(f"model {name!r} is neither an existing path nor a Hugging Face repo id (org/name)")

    config = _first(root, ("config.json",), looked)
    kind = _config_kind(config) if config else None
    if path.is_file():
        weights, layout = path, ("hf" if kind == "hf" else "original")
    else:
        weights = layout = None
        # The real sesame/csm-1b repo carries both layouts: the transformers shards hold Mimi too.
        hf_index = _first(root, (HF_INDEX,), looked)
        if hf_index and (need_codec and mimi is None):
            weights, layout = hf_index, "hf"
        elif kind == "hf":
            weights = _first(root, ("model.safetensors", "model.safetensors.index.json", HF_INDEX), looked)
            layout = "hf"
        if weights is None:
            weights = _first(root, ("model.safetensors", "ckpt.pt"), looked)
            layout = "original" if weights else None
            if weights is not None and kind == "hf" and weights.name == "model.safetensors":
                layout = "hf"
        if weights is None and hf_index:
            weights, layout = hf_index, "hf"
    if weights is None:
        raise ModelNotFound(_missing_message(name, looked))

    mimi_path: Path | None = Path(mimi).expanduser() if mimi else None
    if mimi_path is not None and not mimi_path.exists():
        raise ModelNotFound(f"Mimi checkpoint {mimi_path} does not exist")
    if mimi_path is None and need_codec and layout != "hf":
        mimi_path = _first(root, (MIMI_FILE, "mimi.safetensors"), looked) or _cached_file(
            (MIMI_REPO, "kyutai/mimi"), (MIMI_FILE, "model.safetensors"), looked
        )
        if mimi_path is None:
            raise ModelNotFound(
                "no Mimi codec weights found. Looked in:\n  "
                + "\n  ".join(looked)
                + f"\nGet {MIMI_FILE} from the Hugging Face repo {MIMI_REPO} and pass --mimi PATH "
                "(or use the sesame/csm-1b snapshot, whose transformers-*.safetensors shards include Mimi)."
            )
    if mimi_path is None and layout == "hf":
        mimi_path = weights  # codec_model.* inside the same checkpoint

    tok_path: Path | None = Path(tokenizer).expanduser() if tokenizer else None
    if tok_path is not None and not tok_path.exists():
        raise ModelNotFound(f"tokenizer file {tok_path} does not exist")
    if tok_path is None and need_tokenizer:
        tok_path = _first(root, TOKENIZER_FILES, looked) or _cached_file(TOKENIZER_REPOS, TOKENIZER_FILES, looked)
        if tok_path is None:
            raise ModelNotFound(
                "no Llama-3 tokenizer found. Looked in:\n  "
                + "\n  ".join(looked)
                + "\nGet tokenizer.json from meta-llama/Llama-3.2-1B (gated) or unsloth/Llama-3.2-1B and pass "
                "--tokenizer PATH (a tiktoken tokenizer.model from meta-llama/llama-models works too)."
            )
    return ModelFiles(root, weights, layout or "original", config, mimi_path, tok_path, looked)


def _missing_message(name: str, looked: list[str], offline: bool = False) -> str:
    head = f"no CSM weights found for {name!r}"
    if offline:
        head += " (offline mode: nothing is downloaded)"
    return (
        head
        + ". Looked for:\n  "
        + "\n  ".join(looked)
        + "\nTo get them: accept the licence of sesame/csm-1b on huggingface.co, then "
        "`pip install 'csm-app[hub]'` and run `huggingface-cli download sesame/csm-1b` "
        "(or run csm without --offline), or pass --model DIR holding model.safetensors + config.json."
    )
