"""Batched streaming decode: the streams of many rows (one per running request) advance together.

Each call decodes the next f frames of n listed rows, every row continuing its own stream (its
conv caches, transposed-conv spill, transformer keys/values and position). The weight products
take all n rows' activations at once (each weight read once per call, not once per row); the
per-row work (attention over the row's own cache, the rows' state) stays per row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from .threads import one_blas_thread, pair_default
from .transformer import TransformerState

if TYPE_CHECKING:
    from .model import Mimi

__all__ = ["MimiBatchStreamingDecoder"]


def _tree(fn: Callable, *trees: Any) -> Any:
    """fn over the arrays of nested lists of arrays (the SEANet decoder's state), same nesting out."""
    if isinstance(trees[0], list):
        return [_tree(fn, *leaves) for leaves in zip(*trees)]
    return fn(*trees)


class MimiBatchStreamingDecoder:
    """`rows` independent streaming decodes advanced together. Implements
    csm_core.protocols.BatchStreamingDecoder. Rows start empty; reset_row(row) starts a new stream.

    decode(rows, codes [n, K, f]) returns float32 [n, f·1920]: row i's audio is what its own
    MimiStreamingDecoder returns for the same calls, to float32 rounding. Everything but the
    weight products is computed per row exactly as there; the products take all rows at once, and
    OpenBLAS sgemm rounds a row differently depending on how many rows share the call (measured,
    0.3.31 Haswell). So a call of one row, or products whose rows are independent, give the single
    stream bit for bit (tests/audio/test_mimi_batch.py); otherwise rows differ by a few float32
    ulps, as the single stream differs from itself between 1- and 3-frame calls.

    paired: BLAS on one thread, and large products and the SEANet tail's row groups shared with
    the helper thread (threads.py); default as MimiStreamingDecoder (on with >= 2 CPUs).
    """

    def __init__(self, model: "Mimi", rows: int, paired: bool | None = None):
        if isinstance(rows, bool) or not isinstance(rows, (int, np.integer)) or rows < 1:
            raise ValueError(f"rows must be an integer >= 1, got {rows!r}")
        self.model = model
        self.paired = pair_default() if paired is None else bool(paired)
        self.rows = int(rows)
        m = model
        self._up = np.repeat(m.upsample.init_state()[None], self.rows, axis=0)
        self._seanet = _tree(lambda a: np.repeat(a[None], self.rows, axis=0), m.decoder.init_state())
        self._tr = [m.decoder_transformer.init_state() for _ in range(self.rows)]

    def reset_row(self, row: int) -> None:
        """Start a new stream in `row`; the other rows are untouched."""
        r = self._check_row(row)
        m = self.model
        self._up[r] = m.upsample.init_state()

        def clear(batch: np.ndarray, zero: np.ndarray) -> None:
            batch[r] = zero

        _tree(clear, self._seanet, m.decoder.init_state())
        self._tr[r] = m.decoder_transformer.init_state()

    def frames(self, row: int) -> int:
        """Frames `row` decoded since its last reset."""
        return self._tr[self._check_row(row)].offset // self.model.config.downsample_stride

    def decode(self, rows: Sequence[int], codes: np.ndarray) -> np.ndarray:
        """codes [n, K, f] for the n distinct `rows` -> float32 audio [n, f·frame_size]."""
        m = self.model
        rows = self._check_rows(rows)
        codes = self._check_codes(codes, rows)
        n, k, f = codes.shape
        if n == 0 or f == 0:
            return np.zeros((n, f * m.frame_size), np.float32)
        idx = np.asarray(rows, np.intp)
        pair = self.paired
        with one_blas_thread():
            z = m.quantizer.decode(codes.transpose(1, 0, 2).reshape(k, n * f), pair)  # [n·f, d] at 12.5 Hz
            x, self._up[idx] = m.upsample.step_rows(z.reshape(n, f, -1), self._up[idx])  # [n, 2f, d]
            x = m.decoder_transformer.step_rows(x, [self._tr[r] for r in rows], pair)
            state = _tree(lambda a: a[idx], self._seanet)
            y, state = m.decoder.step_rows(x, state, split=pair, paired=pair)  # [n, f·1920, 1]

        def store(batch: np.ndarray, new: np.ndarray) -> None:
            batch[idx] = new

        _tree(store, self._seanet, state)
        return np.ascontiguousarray(y[:, :, 0])

    # ---- input checks at the boundary ----
    def _check_row(self, row: Any) -> int:
        if isinstance(row, bool) or not isinstance(row, (int, np.integer)):
            raise TypeError(f"a row must be an integer, got {row!r}")
        if not 0 <= row < self.rows:
            raise IndexError(f"row {row} is out of range: this decoder holds rows 0 to {self.rows - 1}")
        return int(row)

    def _check_rows(self, rows: Sequence[int]) -> list[int]:
        if isinstance(rows, (int, np.integer, str, bytes)) or not hasattr(rows, "__len__"):
            raise TypeError(f"rows must be a sequence of row numbers, got {rows!r}")
        out = [self._check_row(r) for r in rows]
        if len(set(out)) != len(out):
            dup = next(r for r in out if out.count(r) > 1)
            raise ValueError(f"row {dup} is listed {out.count(dup)} times in one decode call; each row's stream "
                             "takes at most one chunk per call")
        return out

    def _check_codes(self, codes: Any, rows: list[int]) -> np.ndarray:
        m = self.model
        c = np.asarray(codes)
        if c.ndim != 3:
            raise ValueError(f"codes must be a 3-D array [rows, num_codebooks, frames], got shape {c.shape}")
        if c.shape[0] != len(rows):
            raise ValueError(f"codes hold {c.shape[0]} rows (shape {c.shape}) for {len(rows)} listed rows {rows}")
        if c.dtype.kind not in "iu":
            raise ValueError(f"codes must be integers, got dtype {c.dtype}")
        if not 1 <= c.shape[1] <= m.num_codebooks:
            raise ValueError(f"codes have {c.shape[1]} codebooks (shape {c.shape}); expected 1 to {m.num_codebooks}")
        if c.size and (c.min() < 0 or c.max() >= m.codebook_size):
            i, k, t = np.argwhere((c < 0) | (c >= m.codebook_size))[0]
            raise ValueError(
                f"code {int(c[i, k, t])} for row {rows[i]} (codes[{i}]), codebook {k}, frame {t} is out of "
                f"range [0, {m.codebook_size})"
            )
        return c.astype(np.int64)
