"""Quantized CSM as one GGUF file: GGML block tensors + the config, loaded by memory map.

Tensor names are the canonical ones; `audio_head` is stored as its K-1 matrices `audio_head.i`
[V, Dd] (rows = output codes), already in the layout the kernels read, so loading copies nothing.
"""

from __future__ import annotations

import json
import mmap
import reprlib
from dataclasses import asdict
from pathlib import Path
from typing import Mapping

import numpy as np

from csm_core.config import FLAVORS, ConfigError, CSMConfig, LlamaConfig

from . import formats
from .quant import QTensor
from .weights import WeightError, add_rope_tables, prepare_weights

__all__ = ["write_gguf", "read_gguf", "release_pages", "GGUF_ARCH"]

GGUF_ARCH = "csm"
_KEY_CONFIG = "csm.config"
_KEY_QUANT = "csm.quant"


def _ggml_types():
    """{format name: gguf.GGMLQuantizationType}, from csm_cpu.formats."""
    from gguf import GGMLQuantizationType

    return {f.name: GGMLQuantizationType[f.gguf_type] for f in formats.FORMATS.values()}


def _config_json(config: CSMConfig) -> str:
    return json.dumps({**config.to_dict(), "backbone": asdict(config.backbone), "decoder": asdict(config.decoder)})


def _config_from_json(text: str, source: str) -> CSMConfig:
    try:
        data = json.loads(text)
        custom = {}
        for key, flavor in (("backbone", data["backbone_flavor"]), ("decoder", data["decoder_flavor"])):
            cfg = LlamaConfig(**data[key])
            if not isinstance(flavor, str):
                raise ConfigError(f"{key} flavor must be a name, got {reprlib.repr(flavor)}")
            if FLAVORS.get(flavor) != cfg:
                custom[flavor] = cfg
        return CSMConfig(
            backbone_flavor=data["backbone_flavor"],
            decoder_flavor=data["decoder_flavor"],
            text_vocab_size=data["text_vocab_size"],
            audio_vocab_size=data["audio_vocab_size"],
            audio_num_codebooks=data["audio_num_codebooks"],
            custom_flavors=custom,
        )
    except (ValueError, TypeError, KeyError, RecursionError) as e:  # ConfigError is a ValueError
        raise WeightError(f"{source}: bad {_KEY_CONFIG} ({type(e).__name__}: {str(e)[:200]})") from None


def write_gguf(path: str | Path, config: CSMConfig, weights: Mapping[str, np.ndarray], quant: str,
               *, threads: int = 1, prepared: dict | None = None) -> Path:
    """Quantize canonical weights (tensor by tensor) and write them with the config to path."""
    import gguf

    path = Path(path)
    if prepared is None:
        prepared = prepare_weights(config, weights, quant, threads=threads)
    types = _ggml_types()
    writer = gguf.GGUFWriter(str(path), GGUF_ARCH)
    writer.add_string(_KEY_CONFIG, _config_json(config))
    writer.add_string(_KEY_QUANT, quant)
    for name, t in prepared.items():
        if name.endswith((".rope_cos", ".rope_sin")):
            continue  # derived from the config at load
        if isinstance(t, QTensor):
            if t.interleaved:
                raise ValueError(f"{name}: repacked for the kernels; write the GGML layout (prepare_weights)")
            data = t.data.view(np.float32) if t.fmt == "f32" else t.data
            writer.add_tensor(name, data, raw_dtype=None if t.fmt == "f32" else types[t.fmt])
        else:
            writer.add_tensor(name, np.ascontiguousarray(t, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def read_gguf(path: str | Path) -> tuple[CSMConfig, str, dict]:
    """(config, quant name, engine weights) with every matrix a view into the memory map."""
    import gguf

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: GGUF file not found")
    try:
        reader = gguf.GGUFReader(str(path), "r")
    except Exception as e:  # noqa: BLE001 - the gguf package raises several types for bad files
        raise WeightError(f"{path}: not a readable GGUF file ({e})") from None
    fields = {k: reader.get_field(k) for k in (_KEY_CONFIG, _KEY_QUANT)}
    if any(f is None for f in fields.values()):
        raise WeightError(f"{path}: not a CSM GGUF (missing {[k for k, f in fields.items() if f is None]})")
    text, quant = (_string_field(fields[k], k, path) for k in (_KEY_CONFIG, _KEY_QUANT))
    config = _config_from_json(text, str(path))
    if quant not in _ggml_types():
        raise WeightError(f"{path}: {_KEY_QUANT} is {reprlib.repr(quant)}, expected one of {sorted(_ggml_types())}")
    fmt_of = {v: k for k, v in _ggml_types().items()}
    expected = _expected_shapes(config)
    out: dict = {}
    for t in reader.tensors:
        if t.name not in expected:
            raise WeightError(f"{path}: unexpected tensor {t.name!r}")
        shape = expected[t.name]
        fmt = fmt_of.get(t.tensor_type)
        if fmt is None:
            raise WeightError(f"{path}: tensor {t.name!r} has unsupported type {t.tensor_type.name}")
        logical = tuple(int(d) for d in reversed(t.shape))
        if logical != shape:
            raise WeightError(f"{path}: tensor {t.name!r} has shape {logical}, expected {shape}")
        if t.name in out:
            raise WeightError(f"{path}: tensor {t.name!r} appears twice")
        if len(shape) == 1:
            if fmt != "f32":
                raise WeightError(f"{path}: tensor {t.name!r} is {fmt}, a 1-D tensor is stored f32")
            out[t.name] = np.asarray(t.data, np.float32).reshape(shape)
        else:
            try:
                out[t.name] = QTensor.from_bytes(fmt, shape[0], shape[1], t.data, name=f"{path}: tensor {t.name!r}")
            except ValueError as e:
                raise WeightError(str(e)) from None
    missing = sorted(set(expected) - set(out))
    if missing:
        raise WeightError(f"{path}: missing tensors {missing[:5]}")
    add_rope_tables(config, out)
    return config, quant, out


def _string_field(field, key: str, path: Path) -> str:
    try:
        value = field.contents()
    except Exception as e:  # noqa: BLE001 - the gguf package decodes the value lazily
        raise WeightError(f"{path}: {key} is unreadable ({type(e).__name__}: {e})") from None
    if not isinstance(value, str):
        raise WeightError(f"{path}: {key} must be a string, got {type(value).__name__}")
    return value


def release_pages(a: np.ndarray) -> int:
    """Drop the resident pages of a memory-mapped array from this process (bytes released; 0 if
    a is not in a file map or the platform lacks MADV_DONTNEED). The data stays valid: a later
    read faults it back in from the file. The CPU backend calls this after repacking a mapped
    tensor into its own buffer, so a GGUF load does not hold both copies (Q8_0 CSM-1B peak RSS
    2.44 -> 1.2 GB)."""
    base = a
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    if base is None or not hasattr(mmap, "MADV_DONTNEED") or a.nbytes == 0:
        return 0
    offset = a.ctypes.data - np.frombuffer(base, np.uint8).ctypes.data
    page = mmap.PAGESIZE
    start = -(-offset // page) * page  # pages wholly inside a: neighbours keep theirs
    end = (offset + a.nbytes) // page * page
    if end <= start:
        return 0
    base.madvise(mmap.MADV_DONTNEED, start, end - start)
    return end - start


def _expected_shapes(config: CSMConfig) -> dict[str, tuple[int, ...]]:
    shapes = dict(config.weight_shapes())
    K1, Dd, V = shapes.pop("audio_head")
    for i in range(K1):
        shapes[f"audio_head.{i}"] = (V, Dd)
    return shapes
