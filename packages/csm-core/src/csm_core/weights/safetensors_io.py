"""safetensors reading (memory-mapped, strictly validated) and writing, single files and shards.

File layout: u64 little-endian header length N | N bytes of JSON | data buffer. The JSON maps
each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the
data buffer) plus an optional "__metadata__" str->str map. We parse the header ourselves so
that bf16 comes out as `ml_dtypes.bfloat16` and every defect is reported with the file name.
"""

from __future__ import annotations

import json
import math
import os
import reprlib
import sys
from pathlib import Path
from typing import Mapping

import numpy as np

from .dtypes import SAFETENSORS_DTYPES, safetensors_code
from .errors import CheckpointError

__all__ = [
    "read_safetensors",
    "read_safetensors_header",
    "read_safetensors_index",
    "save_safetensors",
    "MAX_HEADER_BYTES",
]

# The reference implementation refuses headers above 100 MB; the CSM-1B header is ~20 kB.
MAX_HEADER_BYTES = 100 * 1024 * 1024
# numpy's limits, checked here so that a shape an array cannot have is a CheckpointError (a
# zero-element tensor needs no bytes, so its other dimensions are not bounded by the file size).
MAX_DIMS = 32
MAX_DIM = 1 << 48


def read_safetensors_header(path: str | Path) -> tuple[dict[str, dict], dict[str, str], int]:
    """Parse and validate a safetensors header.

    Returns (tensors, metadata, data_start): tensors maps name -> {"dtype": np.dtype,
    "shape": tuple, "begin": int, "end": int} with offsets relative to data_start.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes, no 8-byte header length)")
            n = int.from_bytes(head, "little")
            if n > MAX_HEADER_BYTES:
                raise CheckpointError(
                    f"{path}: safetensors header length {n} bytes exceeds the {MAX_HEADER_BYTES}-byte limit "
                    "(corrupt file or not safetensors)"
                )
            if n + 8 > size:
                raise CheckpointError(
                    f"{path}: truncated safetensors file: header claims {n} bytes but file has {size - 8} after the length"
                )
            raw = f.read(n)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a directory, expected a .safetensors file") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # bad UTF-8 or JSON, a 5000-digit number, nesting too deep
        raise CheckpointError(f"{path}: corrupt safetensors header (not UTF-8 JSON: {type(e).__name__}: {e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (JSON {type(header).__name__}, expected an object)")

    data_start = 8 + n
    data_size = size - data_start
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{path}: '__metadata__' must map strings to strings")

    tensors: dict[str, dict] = {}
    for name, info in header.items():
        where = f"{path}: tensor {name!r}"
        if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
            raise CheckpointError(f"{where}: entry must have 'dtype', 'shape' and 'data_offsets', found {info!r}")
        dtype = SAFETENSORS_DTYPES.get(info["dtype"]) if isinstance(info["dtype"], str) else None
        if dtype is None:
            raise CheckpointError(f"{where}: unknown dtype {info['dtype']!r}; supported: {sorted(SAFETENSORS_DTYPES)}")
        shape, offsets = info["shape"], info["data_offsets"]
        if (
            not isinstance(shape, list)
            or len(shape) > MAX_DIMS
            or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_DIM for d in shape)
        ):
            raise CheckpointError(
                f"{where}: shape must be a list of at most {MAX_DIMS} ints in [0, 2^48], found {reprlib.repr(shape)}"
            )
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]
        ):
            raise CheckpointError(f"{where}: data_offsets must be [begin, end] with 0 <= begin <= end, found {offsets!r}")
        begin, end = offsets
        nbytes = math.prod(shape) * dtype.itemsize
        if end - begin != nbytes:
            raise CheckpointError(
                f"{where}: data_offsets {offsets} span {end - begin} bytes but {info['dtype']}{tuple(shape)} needs {nbytes}"
            )
        if end > data_size:
            raise CheckpointError(
                f"{where}: data_offsets {offsets} run past the end of the data buffer ({data_size} bytes; file truncated?)"
            )
        tensors[name] = {"dtype": dtype, "shape": tuple(shape), "begin": begin, "end": end}

    # Tensors must not share bytes (the format forbids aliasing).
    spans = sorted((t["begin"], t["end"], k) for k, t in tensors.items() if t["end"] > t["begin"])
    for (b0, e0, k0), (b1, e1, k1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise CheckpointError(f"{path}: tensors {k0!r} [{b0}, {e0}) and {k1!r} [{b1}, {e1}) overlap")
    return tensors, metadata, data_start


def read_safetensors(
    path: str | Path, *, names: set[str] | None = None, mmap: bool = True
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a .safetensors file -> (tensors, metadata).

    With mmap=True (default) the arrays are read-only views of a memory map: nothing is read
    until used. `names`, if given, restricts the result to those tensors (all must exist).
    """
    path = Path(path)
    entries, metadata, data_start = read_safetensors_header(path)
    if names is not None:
        missing = sorted(set(names) - entries.keys())
        if missing:
            raise CheckpointError(f"{path}: tensors not in file: {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        entries = {k: entries[k] for k in entries if k in names}
    size = path.stat().st_size
    if mmap and size > data_start:
        # A plain ndarray view of the map (the map stays alive as its base).
        buf = np.memmap(path, dtype=np.uint8, mode="r", offset=data_start, shape=(size - data_start,)).view(np.ndarray)
    else:
        with open(path, "rb") as f:
            f.seek(data_start)
            buf = np.frombuffer(f.read(), dtype=np.uint8)
    out: dict[str, np.ndarray] = {}
    for name, e in entries.items():
        count = math.prod(e["shape"])
        if count == 0:
            arr = np.zeros(e["shape"], dtype=e["dtype"])
        else:
            arr = buf[e["begin"] : e["end"]].view(e["dtype"]).reshape(e["shape"])
            if sys.byteorder != "little" and e["dtype"].itemsize > 1:
                arr = arr.byteswap()
        out[name] = arr
    return out, metadata


def read_safetensors_index(index_path: str | Path, *, mmap: bool = True) -> tuple[dict[str, np.ndarray], dict]:
    """Read a sharded set through its index JSON ({"metadata": ..., "weight_map": {name: shard}}).

    Works for `model.safetensors.index.json` and sesame/csm-1b's `transformers.safetensors.index.json`.
    Every listed tensor must be in the named shard, and every shard tensor must be listed.
    Returns (tensors, index metadata).
    """
    index_path = Path(index_path)
    try:
        index = json.loads(index_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{index_path}: index file not found") from None
    except (ValueError, RecursionError) as e:
        raise CheckpointError(f"{index_path}: not valid JSON ({type(e).__name__}: {e})") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{index_path}: no 'weight_map' object mapping tensor names to shard files")
    by_shard: dict[str, set[str]] = {}
    for name, shard in weight_map.items():
        if Path(shard).name != shard or "\0" in shard:
            raise CheckpointError(f"{index_path}: shard name {shard!r} for {name!r} must be a plain file name")
        by_shard.setdefault(shard, set()).add(name)
    for shard, names in sorted(by_shard.items()):
        if not (index_path.parent / shard).is_file():
            raise CheckpointError(f"{index_path}: shard {shard!r} (holding e.g. {min(names)!r}) not found in {index_path.parent}")
    out: dict[str, np.ndarray] = {}
    for shard, names in sorted(by_shard.items()):
        shard_path = index_path.parent / shard
        entries, _, _ = read_safetensors_header(shard_path)
        missing, extra = sorted(names - entries.keys()), sorted(entries.keys() - names)
        if missing:
            raise CheckpointError(f"{shard_path}: tensors the index assigns to this shard are missing: {missing[:8]}")
        if extra:
            raise CheckpointError(f"{shard_path}: holds tensors the index does not list: {extra[:8]}")
        tensors, _ = read_safetensors(shard_path, mmap=mmap)
        out.update(tensors)
    metadata = index.get("metadata") or {}
    return out, dict(metadata) if isinstance(metadata, dict) else {}


def save_safetensors(path: str | Path, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> None:
    """Write tensors (any SAFETENSORS_DTYPES dtype, incl. ml_dtypes.bfloat16) to a .safetensors file.

    Written to a temporary file beside `path` and renamed, so a crash never leaves half a file.
    """
    path = Path(path)
    header: dict[str, object] = {}
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise TypeError("safetensors metadata must map str to str")
        header["__metadata__"] = dict(metadata)
    arrays: list[np.ndarray] = []
    offset = 0
    # Widest dtypes first: with an 8-aligned data start, every tensor is then naturally aligned.
    for name in sorted(tensors, key=lambda n: (-np.asarray(tensors[n]).dtype.itemsize, n)):
        if name == "__metadata__":
            raise ValueError("'__metadata__' is reserved and cannot be a tensor name")
        a = np.asarray(tensors[name])
        code = safetensors_code(a.dtype)  # raises for unsupported dtypes
        a = a.astype(a.dtype.newbyteorder("<"), order="C", copy=False)  # keeps 0-d arrays 0-d
        header[name] = {"dtype": code, "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
        arrays.append(a)
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # pad so the data buffer starts 8-byte aligned
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(len(raw).to_bytes(8, "little"))
            f.write(raw)
            for a in arrays:
                if a.size:
                    f.write(a.reshape(-1).view(np.uint8).data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
