"""Element types shared by the readers: safetensors codes, torch storage names, numpy dtypes."""

from __future__ import annotations

from typing import Mapping

import ml_dtypes
import numpy as np

__all__ = ["SAFETENSORS_DTYPES", "TORCH_STORAGE_DTYPES", "safetensors_code", "convert_weights", "to_float32"]

# safetensors header dtype code -> little-endian numpy dtype.
SAFETENSORS_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_CODE_BY_DTYPE = {v: k for k, v in SAFETENSORS_DTYPES.items()}

# torch legacy storage class name (as pickled by torch.save) -> numpy dtype.
TORCH_STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


def safetensors_code(dtype: np.dtype) -> str:
    """The safetensors dtype code of a numpy dtype (byte order ignored)."""
    dt = np.dtype(dtype)
    code = _CODE_BY_DTYPE.get(dt.newbyteorder("<") if dt.byteorder == ">" else dt)
    if code is None:
        raise TypeError(f"dtype {dt} has no safetensors code; supported: {sorted(map(str, _CODE_BY_DTYPE))}")
    return code


def to_float32(a: np.ndarray) -> np.ndarray:
    """Any float array (bf16, fp16, fp8, fp64) as float32; float32 input is returned as is."""
    return a if a.dtype == np.float32 else a.astype(np.float32)


def convert_weights(
    weights: Mapping[str, np.ndarray], dtype: str | np.dtype | type = np.float32, *, keep: tuple[str, ...] = ()
) -> dict[str, np.ndarray]:
    """Cast every floating-point tensor to `dtype` ("float32", "bfloat16", "float16" or a numpy dtype).

    Integer/bool tensors and names listed in `keep` (exact names) are left untouched.
    Tensors already in the target dtype are returned without a copy.
    """
    target = np.dtype(ml_dtypes.bfloat16) if str(dtype) in ("bfloat16", "bf16") else np.dtype(dtype)
    out: dict[str, np.ndarray] = {}
    for name, a in weights.items():
        is_float = np.issubdtype(a.dtype, np.floating) or a.dtype in (
            np.dtype(ml_dtypes.bfloat16),
            np.dtype(ml_dtypes.float8_e4m3fn),
            np.dtype(ml_dtypes.float8_e5m2),
        )
        out[name] = a.astype(target) if is_float and name not in keep and a.dtype != target else a
    return out
