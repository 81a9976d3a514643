"""Find a model's files: a directory, a weight file, or a Hugging Face repo id in the local hub cache.

Recognised arrangements (spec/csm.md §3):
- the real ``sesame/csm-1b`` snapshot: the original ``model.safetensors``/``ckpt.pt`` beside the
  ``transformers.safetensors.index.json`` shards (which also carry Mimi as ``codec_model.*``) and
  ``tokenizer.json``. CSM is read from the original file (canonical names, no codec bytes), Mimi
  from the transformers shards;
- a ``save_pretrained`` Hugging Face CSM directory (``config.json`` with ``model_type: csm``,
  ``model.safetensors`` or an index, Mimi inside);
- the original layout (``model.safetensors`` or ``ckpt.pt`` + ``config.json``), with Mimi and the
  tokenizer given explicitly (``mimi=``, ``tokenizer=``), found beside it, or in the hub cache;
- converted files of an installed backend (each is asked whether it recognizes a file: csm-cpu's
  ``.gguf``, csm-mlx's ``.safetensors`` written by csm_mlx.convert).

Nothing is downloaded unless the repo is missing from the cache, offline mode is off
(``offline=False`` and ``HF_HUB_OFFLINE`` unset) and the optional ``huggingface_hub`` is installed.
Every failure raises `ModelNotFound` listing each path looked at and how to get the file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ModelFiles", "ModelNotFound", "DEFAULT_MODEL", "hub_cache_dir", "find_snapshot", "resolve_model"]

DEFAULT_MODEL = "sesame/csm-1b"
MIMI_REPOS = ("kyutai/moshiko-pytorch-bf16", "kyutai/mimi")
MIMI_FILE = "tokenizer-e351c8d8-checkpoint125.safetensors"
TOKENIZER_REPOS = ("meta-llama/Llama-3.2-1B", "unsloth/Llama-3.2-1B")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "original/tokenizer.model")
HF_INDEX = "transformers.safetensors.index.json"
CSM_FILES = ("model.safetensors", "model.safetensors.index.json", HF_INDEX, "ckpt.pt")
CODEC_PREFIX = "codec_model."


class ModelNotFound(FileNotFoundError):
    """What was looked for, where, and how to get it."""


@dataclass
class ModelFiles:
    """Where each part of a model lives. layout: "original", "hf", "sesame" (the hub repo with both
    layouts), or a backend's `file_layout` ("gguf", "mlx": converted files that carry their own config)."""

    root: Path
    weights: Path  # a file or an *.index.json
    layout: str
    config: Path | None
    mimi: Path | None
    tokenizer: Path | None
    looked: list[str] = field(default_factory=list)


def hub_cache_dir() -> Path:
    """HF_HUB_CACHE, else HF_HOME/hub, else $XDG_CACHE_HOME or ~/.cache + huggingface/hub (huggingface_hub's rule)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def is_repo_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~")) and not Path(name).exists()


def _repo_dir(repo_id: str, cache: Path | None = None) -> Path:
    return (cache or hub_cache_dir()) / ("models--" + repo_id.replace("/", "--"))


def find_snapshot(repo_id: str, cache: Path | None = None) -> Path | None:
    """The cached snapshot of repo_id: the revision refs/main names, else the newest one."""
    repo_dir = _repo_dir(repo_id, cache)
    snaps = repo_dir / "snapshots"
    if not snaps.is_dir():
        return None
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        rev = ref.read_text().strip()
        if rev and (snaps / rev).is_dir():
            return snaps / rev
    candidates = sorted((p for p in snaps.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    return candidates[-1] if candidates else None


def offline_mode(offline: bool) -> bool:
    return offline or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def download_snapshot(repo_id: str, looked: list[str]) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ModelNotFound(
            _missing_message(repo_id, looked)
            + "\n(the Hugging Face hub client is not installed, so nothing can be downloaded: "
            "`pip install 'csm-app[hub]'`)"
        ) from None
    try:
        return Path(snapshot_download(repo_id))
    except Exception as e:  # noqa: BLE001 - network, auth, gating: all end the same way for the user
        raise ModelNotFound(f"could not download {repo_id}: {e}\n" + _missing_message(repo_id, looked)) from e


def _first(root: Path, names: tuple[str, ...], looked: list[str]) -> Path | None:
    for n in names:
        p = root / n
        looked.append(str(p))
        if p.is_file():
            return p
    return None


def _read_json(path: Path | None) -> dict:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _has_codec(path: Path) -> bool:
    """Whether a CSM checkpoint file or index holds Mimi as codec_model.* (HF layout)."""
    from csm_core.weights import tensor_names

    try:
        return any(n.startswith(CODEC_PREFIX) for n in tensor_names(path))
    except Exception:  # noqa: BLE001 - an unreadable file simply holds no codec for us
        return False


def _cached_file(repos: tuple[str, ...], names: tuple[str, ...], looked: list[str]) -> Path | None:
    for repo in repos:
        snap = find_snapshot(repo)
        if snap is None:
            looked.append(f"{_repo_dir(repo)}/snapshots/<rev>/ (not in the cache)")
            continue
        hit = _first(snap, names, looked)
        if hit:
            return hit
    return None


def _locate_root(name: str, offline: bool, looked: list[str]) -> tuple[Path, Path | None]:
    """(directory, weight file if the user named one)."""
    path = Path(name).expanduser()
    if path.exists():
        return (path, None) if path.is_dir() else (path.parent, path)
    if not is_repo_id(name):
        raise ModelNotFound(
            f"model {name!r} is neither an existing file or directory nor a Hugging Face repo id (org/name)"
        )
    snap = find_snapshot(name)
    looked.append(f"{_repo_dir(name)}/snapshots/<rev>/" + ("" if snap else " (not in the cache)"))
    if snap is None:
        if offline_mode(offline):
            raise ModelNotFound(_missing_message(name, looked, offline=True))
        snap = download_snapshot(name, looked)
    return snap, None


def _converted_layout(file: Path) -> str | None:
    """The layout of a backend's own converted file (each installed backend is asked), or None."""
    from .backends import backend_classes

    for cls in backend_classes().values():
        if getattr(cls, "file_layout", None) and cls.recognizes(file):
            return cls.file_layout
    return None


def _weights_and_layout(root: Path, file: Path | None, config: dict, looked: list[str]) -> tuple[Path | None, str]:
    if file is not None:
        looked.append(str(file))
        layout = _converted_layout(file)
        if layout:
            return file, layout
        return file, ("hf" if config.get("model_type") == "csm" and "backbone_flavor" not in config else "original")
    weights = _first(root, CSM_FILES, looked)
    if weights is None:
        from .backends import backend_classes

        for cls in backend_classes().values():
            for pattern in getattr(cls, "file_patterns", ()):
                looked.append(f"{root}/{pattern}")
                hits = [p for p in sorted(root.glob(pattern)) if cls.recognizes(p)]
                if len(hits) == 1:
                    return hits[0], cls.file_layout
        return None, ""
    layout = _converted_layout(weights)
    if layout:
        return weights, layout
    if weights.name in ("model.safetensors", "ckpt.pt") and (root / HF_INDEX).is_file():
        return weights, "sesame"  # the hub repo: both layouts side by side
    if weights.name == HF_INDEX or config.get("model_type") == "csm" and "backbone_flavor" not in config:
        return weights, "hf"
    return weights, "original"


def _find_mimi(root: Path, weights: Path, layout: str, looked: list[str]) -> Path | None:
    hit = _first(root, (MIMI_FILE, "mimi.safetensors"), looked)
    if hit:
        return hit
    if layout in ("sesame", "hf"):
        for cand in (root / HF_INDEX, weights):
            looked.append(f"{cand} (codec_model.* tensors)")
            if cand.is_file() and _has_codec(cand):
                return cand
    return _cached_file(MIMI_REPOS, (MIMI_FILE, "model.safetensors"), looked)


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
    root, file = _locate_root(name, offline, looked)
    config = _first(root, ("config.json",), looked)
    weights, layout = _weights_and_layout(root, file, _read_json(config), looked)
    if weights is None:
        raise ModelNotFound(_missing_message(name, looked))

    mimi_path: Path | None = None
    if mimi is not None:
        mimi_path = Path(mimi).expanduser()
        if not mimi_path.exists():
            raise ModelNotFound(f"Mimi checkpoint {mimi_path} does not exist")
    elif need_codec:
        mimi_path = _find_mimi(root, weights, layout, looked)
        if mimi_path is None:
            raise ModelNotFound(
                "no Mimi codec weights found. Looked for:\n  "
                + "\n  ".join(looked)
                + f"\nGet {MIMI_FILE} from the Hugging Face repo {MIMI_REPOS[0]} and pass --mimi PATH "
                "(or use the sesame/csm-1b snapshot, whose transformers-*.safetensors shards include Mimi)."
            )

    tok_path: Path | None = None
    if tokenizer is not None:
        tok_path = Path(tokenizer).expanduser()
        if not tok_path.exists():
            raise ModelNotFound(f"tokenizer file {tok_path} does not exist")
    elif need_tokenizer:
        tok_path = _first(root, TOKENIZER_FILES, looked) or _cached_file(TOKENIZER_REPOS, TOKENIZER_FILES, looked)
        if tok_path is None:
            raise ModelNotFound(
                "no Llama-3 tokenizer found. Looked for:\n  "
                + "\n  ".join(looked)
                + "\nGet tokenizer.json from meta-llama/Llama-3.2-1B (gated) or unsloth/Llama-3.2-1B and pass "
                "--tokenizer PATH (Meta's tiktoken tokenizer.model works too)."
            )
    return ModelFiles(root, weights, layout, config, mimi_path, tok_path, looked)


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
