"""The weight formats csm-cpu stores, in one table every Python module reads (quant, weights,
gguf_io, twins, backend). The C side has its own one place, include/csm_formats.h (enum + layout
table + row functions); at import this table is checked against it, so the two cannot drift.

Adding a format: README §Backends lists the files (this table, csm_formats.h, the kernels).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import _kernels

__all__ = ["Format", "FORMATS", "get", "names"]


@dataclass(frozen=True)
class Format:
    name: str
    block: int  # values per block: a stored row holds a multiple of this many
    block_bytes: int  # bytes per block (GGML's layout for the block formats)
    gguf_type: str  # gguf.GGMLQuantizationType member of this layout
    int8_activations: bool  # its products read int8-quantized activations (csm_quantize_act)
    embedding: str  # format of the embedding tables when the model is stored in this one
    fallback: str | None = None  # format of a matrix whose rows are not a multiple of `block`
    max_cols: int | None = None  # longest row the kernels take (None: no limit)
    repack_unit: int = 0  # bytes of a row's unit in the AVX2 4-row interleave (QTensor.repack4); 0: never

    @property
    def code(self) -> int:
        """The C enum value (csm_formats.h), which the kernels take."""
        return _kernels.FORMATS[self.name]

    @property
    def bytes_per_weight(self) -> float:
        return self.block_bytes / self.block

    def row_bytes(self, cols: int) -> int:
        return cols // self.block * self.block_bytes

    def repacks(self, cols: int) -> bool:
        """Whether rows of `cols` values are interleaved for the AVX2 4-row kernels."""
        return self.repack_unit > 0 and self.row_bytes(cols) % self.repack_unit == 0

    def check_row_length(self, cols: int, name: str = "tensor") -> None:
        """A clear error for rows this format cannot store (not a multiple of its block, too long)."""
        if cols % self.block:
            raise ValueError(f"{name}: {self.name} needs rows of a multiple of {self.block} values, got {cols}")
        if self.max_cols is not None and cols > self.max_cols:
            raise ValueError(f"{name}: {self.name} rows of {cols} values exceed the supported {self.max_cols}")

    def matrix_format(self, cols: int) -> "Format":
        """The format a matrix of rows of `cols` values takes when the model is stored in this one."""
        return get(self.fallback) if self.fallback and cols % self.block else self


# Embedding rows are looked up, not streamed each frame: 4-bit would cost quality for no speed.
# q4_k's fallback: as llama.cpp falls back from its k-quants (every CSM-1B matrix qualifies; tiny
# test configs do not).
_TABLE = (
    Format("f32", 1, 4, "F32", False, "f32"),
    Format("bf16", 1, 2, "BF16", False, "bf16", repack_unit=16),
    Format("q8_0", _kernels.BLOCK, 34, "Q8_0", True, "q8_0", repack_unit=34),
    Format("q4_0", _kernels.BLOCK, 18, "Q4_0", True, "q8_0", repack_unit=18),
    Format("q4_k", _kernels.SUPER_BLOCK, 144, "Q4_K", True, "q8_0", fallback="q8_0", max_cols=_kernels.Q4K_MAX_COLS),
)
FORMATS: dict[str, Format] = {f.name: f for f in _TABLE}


def names() -> tuple[str, ...]:
    return tuple(FORMATS)


def get(name: str) -> Format:
    """The format called `name`; a ValueError listing the supported ones otherwise."""
    try:
        return FORMATS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unsupported quantization {name!r}; supported: {', '.join(FORMATS)}") from None


def _check_against_c() -> None:
    c = _kernels.format_table()  # {name: (code, block, block_bytes, int8_activations, repack_unit)}
    if set(c) != set(FORMATS):
        raise ImportError(f"csm_cpu formats: the C table has {sorted(c)}, the Python table {sorted(FORMATS)}")
    for f in _TABLE:
        _, block, block_bytes, int8, unit = c[f.name]
        if (block, block_bytes, bool(int8), unit) != (f.block, f.block_bytes, f.int8_activations, f.repack_unit):
            raise ImportError(f"csm_cpu format {f.name}: C layout {c[f.name][1:]} differs from the Python table {f}")


_check_against_c()
