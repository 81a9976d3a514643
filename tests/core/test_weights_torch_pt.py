"""Torch-free `.pt` reader: tensors, views, dtypes, nesting, and refusal of any foreign pickle global.

Default tests write torch-format zip checkpoints by hand (pickle opcodes + storage records) so they
run without torch; the `reference` tests use a real `torch.save`.
"""

from __future__ import annotations

import struct
import zipfile

import ml_dtypes
import numpy as np
import pytest

from csm_core.weights import CheckpointError, load_torch_pickle, read_torch_checkpoint

_STORAGE = {
    np.dtype(np.float32): "FloatStorage",
    np.dtype(ml_dtypes.bfloat16): "BFloat16Storage",
    np.dtype(np.float16): "HalfStorage",
    np.dtype(np.int64): "LongStorage",
    np.dtype(np.int32): "IntStorage",
    np.dtype(np.bool_): "BoolStorage",
    np.dtype(np.uint8): "ByteStorage",
}


# ---- a minimal torch.save-format writer (pickle protocol 2 opcodes) ----
def _str(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _int(i: int) -> bytes:
    return b"J" + struct.pack("<i", i)


def _tuple(items) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


class Tensor:
    """A tensor view over storage `key`: what `torch.save` pickles for one tensor."""

    def __init__(self, key: str, dtype, numel: int, offset: int, size, stride, parameter: bool = False):
        self.key, self.dtype, self.numel = key, np.dtype(dtype), numel
        self.offset, self.size, self.stride, self.parameter = offset, tuple(size), tuple(stride), parameter


class Raw:
    """Literal opcodes (to smuggle in a foreign global)."""

    def __init__(self, ops: bytes):
        self.ops = ops


def _ops(obj) -> bytes:
    if isinstance(obj, Raw):
        return obj.ops
    if isinstance(obj, dict):
        return b"}(" + b"".join(_ops(k) + _ops(v) for k, v in obj.items()) + b"u"
    if isinstance(obj, str):
        return _str(obj)
    if isinstance(obj, bool):
        return b"\x88" if obj else b"\x89"
    if isinstance(obj, int):
        return _int(obj)
    if isinstance(obj, Tensor):
        pid = _tuple([_str("storage"), _global("torch", _STORAGE[obj.dtype]), _str(obj.key), _str("cpu"), _int(obj.numel)]) + b"Q"
        hooks = _global("collections", "OrderedDict") + b")R"
        args = _tuple([pid, _int(obj.offset), _tuple(map(_int, obj.size)), _tuple(map(_int, obj.stride)), b"\x89", hooks])
        t = _global("torch._utils", "_rebuild_tensor_v2") + args + b"R"
        if obj.parameter:
            t = _global("torch._utils", "_rebuild_parameter") + _tuple([t, b"\x88", hooks]) + b"R"
        return t
    raise TypeError(type(obj))


def write_pt(path, obj, storages: dict[str, np.ndarray], compress=zipfile.ZIP_STORED) -> None:
    with zipfile.ZipFile(path, "w", compression=compress) as z:
        z.writestr("archive/data.pkl", b"\x80\x02" + _ops(obj) + b".")
        z.writestr("archive/byteorder", "little")
        for key, arr in storages.items():
            z.writestr(f"archive/data/{key}", np.ascontiguousarray(arr).tobytes())
        z.writestr("archive/version", "3\n")


def _dense(key: str, a: np.ndarray, parameter=False) -> Tensor:
    stride = tuple(s // a.itemsize for s in a.strides)
    return Tensor(key, a.dtype, a.size, 0, a.shape, stride, parameter)


@pytest.fixture
def arrays():
    rng = np.random.default_rng(1)
    return {
        "w": rng.standard_normal((4, 6)).astype(np.float32),
        "b": rng.standard_normal((3, 5)).astype(ml_dtypes.bfloat16),
        "h": rng.standard_normal(7).astype(np.float16),
        "i": np.arange(5, dtype=np.int64),
        "m": np.array([True, False, True]),
    }


@pytest.mark.parametrize("compress", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_reads_dtypes_parameters_and_views(tmp_path, arrays, compress):
    storages = {str(i): a for i, a in enumerate(arrays.values())}
    sd = {name: _dense(str(i), a, parameter=(name == "w")) for i, (name, a) in enumerate(arrays.items())}
    w = arrays["w"]
    sd["w_T_slice"] = Tensor("0", np.float32, w.size, 1, (5, 4), (1, 6))  # w[:, 1:].T, shares storage 0
    sd["w_rows"] = Tensor("0", np.float32, w.size, 6, (2, 6), (6, 1))  # w[1:3], contiguous at an offset
    write_pt(tmp_path / "ck.pt", sd, storages, compress)
    got = read_torch_checkpoint(tmp_path / "ck.pt")
    for name, a in arrays.items():
        assert got[name].dtype == a.dtype and np.array_equal(got[name], a), name
    assert np.array_equal(got["w_T_slice"], w[:, 1:].T)
    assert np.array_equal(got["w_rows"], w[1:3])


def test_nested_state_dict_and_extras(tmp_path, arrays):
    a = arrays["w"]
    write_pt(tmp_path / "n.pt", {"model": {"x": _dense("0", a)}, "epoch": 7, "done": True}, {"0": a})
    assert list(read_torch_checkpoint(tmp_path / "n.pt")) == ["x"]
    tree = load_torch_pickle(tmp_path / "n.pt")
    assert tree["epoch"] == 7 and tree["done"] is True


def test_foreign_global_is_refused_and_never_runs(tmp_path, arrays):
    marker = tmp_path / "PWNED"
    evil = Raw(_global("os", "system") + _tuple([_str(f"touch {marker}")]) + b"R")
    write_pt(tmp_path / "evil.pt", {"x": _dense("0", arrays["w"]), "y": evil}, {"0": arrays["w"]})
    with pytest.raises(CheckpointError, match=r"refusing to load pickle global 'os\.system'") as err:
        read_torch_checkpoint(tmp_path / "evil.pt")
    assert str(tmp_path / "evil.pt") in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("module, name", [("builtins", "eval"), ("torch", "load"), ("torch._utils", "_rebuild_device_tensor_from_numpy")])
def test_other_globals_are_refused(tmp_path, module, name):
    write_pt(tmp_path / "g.pt", {"y": Raw(_global(module, name))}, {})
    with pytest.raises(CheckpointError, match=f"'{module}.{name}'"):
        read_torch_checkpoint(tmp_path / "g.pt")


def test_view_out_of_bounds(tmp_path, arrays):
    a = arrays["w"]
    write_pt(tmp_path / "o.pt", {"x": Tensor("0", np.float32, a.size, 20, (2, 6), (6, 1))}, {"0": a})
    with pytest.raises(CheckpointError, match="storage '0'.*reads past the end"):
        read_torch_checkpoint(tmp_path / "o.pt")


def test_storage_problems(tmp_path, arrays):
    a = arrays["w"]
    write_pt(tmp_path / "m.pt", {"x": _dense("0", a)}, {})
    with pytest.raises(CheckpointError, match="storage record 'archive/data/0' is missing"):
        read_torch_checkpoint(tmp_path / "m.pt")
    write_pt(tmp_path / "s.pt", {"x": _dense("0", a)}, {"0": a[:2]})
    with pytest.raises(CheckpointError, match="has 48 bytes, needs 96"):
        read_torch_checkpoint(tmp_path / "s.pt")


def test_not_a_checkpoint(tmp_path, arrays):
    (tmp_path / "legacy.pt").write_bytes(b"\x80\x02\x8a\x0alo\x8a\x0a")  # legacy torch.save starts with a pickle
    with pytest.raises(CheckpointError, match="legacy"):
        read_torch_checkpoint(tmp_path / "legacy.pt")
    write_pt(tmp_path / "ok.pt", {"x": _dense("0", arrays["w"])}, {"0": arrays["w"]})
    data = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="trunc.pt"):
        read_torch_checkpoint(tmp_path / "trunc.pt")
    with zipfile.ZipFile(tmp_path / "nopkl.pt", "w") as z:
        z.writestr("archive/other", "x")
    with pytest.raises(CheckpointError, match="data.pkl"):
        read_torch_checkpoint(tmp_path / "nopkl.pt")
    write_pt(tmp_path / "list.pt", {"a": 1, "b": "x"}, {})
    with pytest.raises(CheckpointError, match="no state dict found"):
        read_torch_checkpoint(tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="not found"):
        read_torch_checkpoint(tmp_path / "absent.pt")


@pytest.mark.reference
def test_real_torch_save(tmp_path):
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 8, generator=g)
    sd = {
        "linear.weight": torch.nn.Parameter(torch.randn(4, 3, generator=g)),
        "bf16": torch.randn(5, 2, generator=g).to(torch.bfloat16),
        "fp16": torch.randn(3, generator=g).half(),
        "ids": torch.arange(10, dtype=torch.int64),
        "i32": torch.arange(4, dtype=torch.int32),
        "mask": torch.tensor([True, False]),
        "view_T": base[1:, 2:].t(),  # strided view with an offset; torch saves the whole storage
        "view_rows": base[2:4],
        "scalar": torch.tensor(3.5),
    }
    for wrap in (lambda d: d, lambda d: {"model": d, "step": 12}):
        torch.save(wrap(sd), tmp_path / "ckpt.pt")
        got = read_torch_checkpoint(tmp_path / "ckpt.pt")
        assert set(got) == set(sd)
        for name, t in sd.items():
            ref = t.detach().float().numpy() if t.dtype == torch.bfloat16 else t.detach().numpy()
            mine = got[name].astype(np.float32) if t.dtype == torch.bfloat16 else got[name]
            assert mine.shape == ref.shape and np.array_equal(mine, ref), name
        assert got["bf16"].dtype == np.dtype(ml_dtypes.bfloat16)
        assert got["fp16"].dtype == np.float16 and got["ids"].dtype == np.int64


@pytest.mark.reference
def test_real_torch_save_with_foreign_object_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'PWNED'}",))

    torch.save({"w": torch.zeros(2), "evil": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"refusing to load pickle global '(os|posix)\.system'"):
        read_torch_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "PWNED").exists()
