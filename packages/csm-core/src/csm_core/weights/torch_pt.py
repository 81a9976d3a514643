"""Read PyTorch zip checkpoints (`torch.save`, torch >= 1.6) without torch and without running pickle code.

A `.pt` file is a zip archive: `<root>/data.pkl` (the pickled object tree) and one record per
storage, `<root>/data/<key>`, holding raw little-endian element bytes. The pickle refers to
storages through persistent ids `("storage", torch.FloatStorage, key, location, numel)` and
rebuilds tensors with `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`.

We unpickle with a restricted `Unpickler` whose `find_class` hands out numpy stand-ins for that
handful of torch/collections globals and refuses every other global by name, so no code from
the file ever runs. Storages are memory-mapped where the zip stores them uncompressed (torch
always does).

Memory is bounded by the file: the pickle's opcodes are scanned before unpickling (a memo index
or a length it names must fit the pickle), a compressed record may expand at most as deflate can
(other compressions, which torch never writes, are refused), and a tensor view may not hold more
elements than its storage (a stride-0 view of 10^12 elements is refused, not copied).
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import pickletools
import reprlib
import struct
import sys
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .dtypes import TORCH_STORAGE_DTYPES
from .errors import CheckpointError

__all__ = ["read_torch_checkpoint", "load_torch_pickle"]

# Keys under which training scripts commonly nest the state dict.
_NESTED_KEYS = ("model", "state_dict", "model_state_dict", "module")


class _StorageType:
    """Stand-in for a `torch.<X>Storage` class: only its element dtype matters."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = TORCH_STORAGE_DTYPES[name]


class _Storage:
    """One `<root>/data/<key>` record, read lazily as a flat numpy array."""

    def __init__(self, archive: "_Archive", key: str, dtype: np.dtype, numel: int):
        self.archive, self.key, self.dtype, self.numel = archive, key, dtype, numel
        self._array: np.ndarray | None = None

    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = self.archive.storage_array(self.key, self.dtype, self.numel)
        return self._array


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    return _view(storage, storage_offset, size, stride)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _view(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


def _rebuild_parameter_with_state(data, requires_grad=False, backward_hooks=None, state=None):
    return data


def _view(storage: _Storage, offset: int, size, stride) -> np.ndarray:
    """The tensor (offset, size, stride) over a storage, bounds-checked; non-contiguous views are copied."""
    if not isinstance(storage, _Storage):
        raise CheckpointError(f"tensor rebuilt from {type(storage).__name__}, expected a storage reference")
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    where = f"storage {storage.key!r} ({storage.numel} elements)"
    if len(size) != len(stride) or any(s < 0 for s in size) or any(s < 0 for s in stride) or offset < 0:
        raise CheckpointError(f"{where}: invalid tensor view offset={offset} size={size} stride={stride}")
    if math.prod(size) == 0:
        return np.zeros(size, dtype=storage.dtype)
    if math.prod(size) > storage.numel:
        raise CheckpointError(f"{where}: tensor view size={size} stride={stride} has more elements than its storage")
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= storage.numel:
        raise CheckpointError(f"{where}: tensor view offset={offset} size={size} stride={stride} reads past the end")
    flat = storage.array()
    contiguous = tuple(int(math.prod(size[i + 1 :])) for i in range(len(size)))
    if all(n == 1 or s == c for n, s, c in zip(size, stride, contiguous)):
        return flat[offset : offset + math.prod(size)].reshape(size)
    item = flat.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(flat[offset:], shape=size, strides=[s * item for s in stride], writeable=False)
    return np.ascontiguousarray(view)


_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, RuntimeError,
               NotImplementedError, OverflowError, UnicodeDecodeError, zlib.error)  # fmt: skip
_MAX_DEFLATE_RATIO = 1032  # the most deflate can expand (258-byte matches of 2 bits)
_MEMO_OPS = {"PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET"}

_ALLOWED: dict[tuple[str, str], Callable[..., Any] | type] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, archive: "_Archive"):
        super().__init__(file)
        self.archive = archive

    def find_class(self, module: str, name: str):
        if module == "torch" and name in TORCH_STORAGE_DTYPES:
            return _StorageType(name)
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise CheckpointError(
                f"{self.archive.path}: refusing to load pickle global '{module}.{name}' "
                "(only tensors, storages and OrderedDict are allowed; the file may be malicious or not a weight checkpoint)"
            ) from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise CheckpointError(f"{self.archive.path}: unsupported persistent id {reprlib.repr(pid)}")
        _, stype, key, _location, numel = pid
        if not isinstance(numel, int) or numel < 0:
            raise CheckpointError(f"{self.archive.path}: storage {reprlib.repr(key)} has {reprlib.repr(numel)} elements")
        return self.archive.storage(str(key), stype.dtype, numel)


class _Archive:
    """The zip container: finds `<root>/data.pkl` and memory-maps storage records."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.zip = zipfile.ZipFile(path)
        except FileNotFoundError:
            raise CheckpointError(f"{path}: file not found") from None
        except _ZIP_ERRORS as e:
            raise CheckpointError(
                f"{path}: not a zip-format PyTorch checkpoint (truncated, corrupt, or the legacy pre-1.6 "
                f"torch.save format, which is not supported: re-save it with a current torch) ({type(e).__name__}: {e})"
            ) from None
        pkls = [n for n in self.zip.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise CheckpointError(f"{path}: expected one '<root>/data.pkl' record in the zip, found {pkls or 'none'}")
        self.root = pkls[0][: -len("data.pkl")]
        order = b"little"
        if self.root + "byteorder" in self.zip.namelist():
            order = self._read(self.root + "byteorder").strip()
        if order not in (b"little", b"big"):
            raise CheckpointError(f"{path}: byteorder record says {order[:40]!r}, expected 'little' or 'big'")
        self.swap = order.decode() != sys.byteorder
        self.storages: dict[str, _Storage] = {}

    def _read(self, name: str) -> bytes:
        info = self.zip.getinfo(name)
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise CheckpointError(f"{self.path}: record {name!r} uses zip compression {info.compress_type}; "
                                  "torch writes records stored or deflated")  # fmt: skip
        if info.compress_type == zipfile.ZIP_DEFLATED and info.file_size > _MAX_DEFLATE_RATIO * info.compress_size + 1024:
            raise CheckpointError(f"{self.path}: record {name!r} claims {info.file_size} bytes from "
                                  f"{info.compress_size} compressed, more than deflate can expand")  # fmt: skip
        try:
            return self.zip.read(name)
        except _ZIP_ERRORS as e:  # CRC mismatch, truncated record, encrypted, bad deflate stream
            raise CheckpointError(f"{self.path}: record {name!r} is unreadable ({type(e).__name__}: {e})") from None

    def pickle_bytes(self) -> bytes:
        return self._read(self.root + "data.pkl")

    def storage(self, key: str, dtype: np.dtype, numel: int) -> _Storage:
        s = self.storages.get(key)
        if s is None:
            s = self.storages[key] = _Storage(self, key, dtype, numel)
        elif s.dtype != dtype:
            raise CheckpointError(f"{self.path}: storage {key!r} used as both {s.dtype} and {dtype}")
        return s

    def storage_array(self, key: str, dtype: np.dtype, numel: int) -> np.ndarray:
        name = f"{self.root}data/{key}"
        try:
            info = self.zip.getinfo(name)
        except KeyError:
            raise CheckpointError(f"{self.path}: storage record {name!r} is missing") from None
        nbytes = numel * dtype.itemsize
        if info.file_size < nbytes:
            raise CheckpointError(f"{self.path}: storage {name!r} has {info.file_size} bytes, needs {nbytes} ({numel} x {dtype})")
        if info.compress_type == zipfile.ZIP_STORED and nbytes:
            start = self._data_offset(info)
            if start + nbytes > self.path.stat().st_size:
                raise CheckpointError(f"{self.path}: storage {name!r} runs past the end of the file (truncated?)")
            arr = np.memmap(self.path, dtype=np.uint8, mode="r", offset=start, shape=(nbytes,)).view(np.ndarray).view(dtype)
        else:
            arr = np.frombuffer(self._read(name)[:nbytes], dtype=dtype)
        return arr.byteswap() if self.swap and dtype.itemsize > 1 else arr

    def _data_offset(self, info: zipfile.ZipInfo) -> int:
        # Local file header: 30 fixed bytes, then the name and an extra field of their own lengths.
        with open(self.path, "rb") as f:
            f.seek(info.header_offset)
            head = f.read(30)
        if len(head) < 30 or head[:4] != b"PK\x03\x04":
            raise CheckpointError(f"{self.path}: corrupt zip local header for {info.filename!r}")
        name_len, extra_len = struct.unpack("<HH", head[26:30])
        return info.header_offset + 30 + name_len + extra_len


def _check_pickle(data: bytes, path: Path) -> None:
    """Scan the opcodes before unpickling: every length and memo index must fit the pickle, so
    the unpickler never allocates for a size the file merely claims."""
    limit = len(data)
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name in _MEMO_OPS and (not isinstance(arg, int) or not 0 <= arg <= limit):
                raise CheckpointError(f"{path}: data.pkl {op.name} names memo slot {reprlib.repr(arg)}, the pickle is {limit} bytes")
            if op.name == "FRAME" and arg > limit:
                raise CheckpointError(f"{path}: data.pkl frame of {arg} bytes in a {limit}-byte pickle")
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - pickletools raises ValueError and others for a bad stream
        raise CheckpointError(f"{path}: corrupt data.pkl ({type(e).__name__}: {e})") from None


def load_torch_pickle(path: str | Path) -> Any:
    """Unpickle a zip `.pt` file safely: the object tree with tensors as numpy arrays."""
    path = Path(path)
    archive = _Archive(path)
    try:
        data = archive.pickle_bytes()
        _check_pickle(data, path)
        return _RestrictedUnpickler(io.BytesIO(data), archive).load()
    except CheckpointError:
        raise
    except Exception as e:  # a malformed pickle stream
        raise CheckpointError(f"{path}: corrupt data.pkl ({type(e).__name__}: {str(e)[:200]})") from None
    finally:
        archive.zip.close()  # every storage was mapped or read while unpickling


def read_torch_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """A `.pt` state dict as {name: array}: a plain state dict, or one nested under
    "model" / "state_dict" / "model_state_dict" / "module" (the official ckpt.pt is plain)."""
    obj = load_torch_pickle(path)

    def is_state_dict(d: Any) -> bool:
        return isinstance(d, dict) and bool(d) and all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in d.items())

    if is_state_dict(obj):
        return dict(obj)
    if isinstance(obj, dict):
        for key in _NESTED_KEYS:
            if is_state_dict(obj.get(key)):
                return dict(obj[key])
        keys = sorted(k if isinstance(k, str) else f"<{type(k).__name__}>" for k in obj)
        raise CheckpointError(
            f"{path}: no state dict found: top-level keys {keys[:12]} are not all tensors, "
            f"and none of {list(_NESTED_KEYS)} holds a dict of tensors"
        )
    raise CheckpointError(f"{path}: checkpoint holds a {type(obj).__name__}, expected a dict of tensors")
