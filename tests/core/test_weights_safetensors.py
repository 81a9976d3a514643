"""safetensors reader/writer: round trips, compatibility with the reference library, sharded sets, and
clear errors for damaged files."""

from __future__ import annotations

import json
import struct

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file as st_load_file
from safetensors.numpy import save_file as st_save_file

from csm_core.weights import (
    CheckpointError,
    read_safetensors,
    read_safetensors_index,
    read_tensors,
    save_safetensors,
)
from csm_core.weights.safetensors_io import MAX_HEADER_BYTES


def _tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "f32": rng.standard_normal((3, 5)).astype(np.float32),
        "bf16": rng.standard_normal((4, 2, 3)).astype(ml_dtypes.bfloat16),
        "f16": rng.standard_normal(7).astype(np.float16),
        "i64": np.arange(-3, 3, dtype=np.int64),
        "u8": np.arange(5, dtype=np.uint8),
        "flag": np.array([True, False]),
        "empty": np.zeros((0, 4), np.float32),
        "scalar": np.array(2.5, np.float32),
    }


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_round_trip_keeps_dtype_shape_and_bytes(tmp_path):
    t = _tensors()
    save_safetensors(tmp_path / "a.safetensors", t, {"format": "np", "note": "x"})
    got, meta = read_safetensors(tmp_path / "a.safetensors")
    assert meta == {"format": "np", "note": "x"}
    assert set(got) == set(t)
    for k in t:
        assert _same(got[k], t[k]), k
    assert got["bf16"].dtype == np.dtype(ml_dtypes.bfloat16)
    assert not got["f32"].flags.writeable  # memory-mapped, read-only
    assert all(a.flags.aligned for a in got.values())  # widest dtypes written first


def test_non_contiguous_input_is_written_correctly(tmp_path):
    a = np.arange(24, dtype=np.float32).reshape(4, 6)[:, ::2].T  # non-contiguous view
    save_safetensors(tmp_path / "v.safetensors", {"a": a})
    assert np.array_equal(read_safetensors(tmp_path / "v.safetensors")[0]["a"], a)


def test_compatible_with_reference_library(tmp_path):
    t = {k: v for k, v in _tensors().items() if k != "bf16"}  # safetensors' numpy API has no bf16
    save_safetensors(tmp_path / "ours.safetensors", t)
    theirs = st_load_file(tmp_path / "ours.safetensors")
    for k in t:
        assert _same(theirs[k], t[k]), k
    st_save_file(t, tmp_path / "theirs.safetensors", metadata={"m": "1"})
    ours, meta = read_safetensors(tmp_path / "theirs.safetensors")
    assert meta == {"m": "1"}
    for k in t:
        assert _same(ours[k], t[k]), k


def test_names_subset_and_no_mmap(tmp_path):
    t = _tensors()
    save_safetensors(tmp_path / "a.safetensors", t)
    got, _ = read_safetensors(tmp_path / "a.safetensors", names={"f32", "bf16"}, mmap=False)
    assert set(got) == {"f32", "bf16"} and _same(got["bf16"], t["bf16"])
    with pytest.raises(CheckpointError, match="not in file.*nope"):
        read_safetensors(tmp_path / "a.safetensors", names={"nope"})


def _write_shards(tmp_path, index_name: str, shard_fmt: str):
    t = _tensors()
    names = sorted(t)
    parts = [names[:4], names[4:]]
    weight_map = {}
    for i, part in enumerate(parts, 1):
        fname = shard_fmt.format(i)
        save_safetensors(tmp_path / fname, {k: t[k] for k in part})
        weight_map.update({k: fname for k in part})
    (tmp_path / index_name).write_text(json.dumps({"metadata": {"total_size": 1}, "weight_map": weight_map}))
    return t, weight_map


@pytest.mark.parametrize(
    "index_name, shard_fmt",
    [
        ("model.safetensors.index.json", "model-0000{}-of-00002.safetensors"),
        ("transformers.safetensors.index.json", "transformers-0000{}-of-00002.safetensors"),  # sesame/csm-1b
    ],
)
def test_sharded_sets(tmp_path, index_name, shard_fmt):
    t, _ = _write_shards(tmp_path, index_name, shard_fmt)
    got, meta = read_safetensors_index(tmp_path / index_name)
    assert meta == {"total_size": 1}
    assert set(got) == set(t) and all(_same(got[k], t[k]) for k in t)
    assert set(read_tensors(tmp_path / index_name)) == set(t)


def test_sharded_set_inconsistencies(tmp_path):
    t, weight_map = _write_shards(tmp_path, "model.safetensors.index.json", "model-0000{}-of-00002.safetensors")
    index = tmp_path / "model.safetensors.index.json"

    bad = dict(weight_map, ghost="model-00001-of-00002.safetensors")
    index.write_text(json.dumps({"weight_map": bad}))
    with pytest.raises(CheckpointError, match="missing.*ghost"):
        read_safetensors_index(index)

    bad = {k: v for k, v in weight_map.items() if k != "f32"}
    index.write_text(json.dumps({"weight_map": bad}))
    with pytest.raises(CheckpointError, match="does not list.*f32"):
        read_safetensors_index(index)

    bad = dict(weight_map, f32="model-00009-of-00002.safetensors")
    index.write_text(json.dumps({"weight_map": bad}))
    with pytest.raises(CheckpointError, match="model-00009-of-00002.safetensors.*not found"):
        read_safetensors_index(index)

    index.write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_safetensors_index(index)
    index.write_text(json.dumps({"metadata": {}}))
    with pytest.raises(CheckpointError, match="weight_map"):
        read_safetensors_index(index)


# ---- damaged files ----


def _raw(header: dict | bytes, data: bytes = b"", claimed_len: int | None = None) -> bytes:
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(h) if claimed_len is None else claimed_len) + h + data


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "truncated.*no 8-byte header length"),
        (b"\x01\x02\x03", "truncated"),
        (_raw(b"{}", claimed_len=MAX_HEADER_BYTES + 1), "exceeds the .*-byte limit"),  # header bomb
        (_raw(b"{}", claimed_len=2**63), "exceeds"),
        (_raw(b'{"a": {"dtype": "F32"', claimed_len=500), "header claims 500 bytes"),  # truncated header
        (_raw(b"\xff\xfe{garbage"), "not UTF-8 JSON"),
        (_raw(b"[1, 2]"), "expected an object"),
        (_raw({"a": {"dtype": "F32", "shape": [2]}}), "must have 'dtype', 'shape' and 'data_offsets'"),
        (_raw({"a": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 8]}}, bytes(8)), "unknown dtype 'Q4'"),
        (_raw({"a": {"dtype": "F32", "shape": [2, -1], "data_offsets": [0, 8]}}, bytes(8)), "shape must be"),
        (_raw({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, bytes(8)), "data_offsets must be"),
        (_raw({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(8)), "span 8 bytes but F32\\(3,\\) needs 12"),
        (_raw({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, bytes(8)), "run past the end"),  # truncated data
        (
            _raw(
                {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}},
                bytes(12),
            ),
            "overlap",
        ),
        (_raw({"__metadata__": {"k": 1}}), "__metadata__"),
    ],
)
def test_damaged_files_give_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as err:
        read_safetensors(path)
    assert str(path) in str(err.value)


def test_truncated_real_file(tmp_path):
    path = tmp_path / "a.safetensors"
    save_safetensors(path, _tensors())
    data = path.read_bytes()
    path.write_bytes(data[:-5])
    with pytest.raises(CheckpointError, match="run past the end"):
        read_safetensors(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_safetensors(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="directory"):
        read_safetensors(tmp_path)


def test_writer_rejects_unsupported_dtype_and_bad_metadata(tmp_path):
    with pytest.raises(TypeError, match="no safetensors code"):
        save_safetensors(tmp_path / "c.safetensors", {"c": np.zeros(2, np.complex64)})
    with pytest.raises(TypeError, match="metadata"):
        save_safetensors(tmp_path / "c.safetensors", {"a": np.zeros(2, np.float32)}, {"k": 1})  # type: ignore[dict-item]
    assert not list(tmp_path.iterdir())  # nothing half-written
