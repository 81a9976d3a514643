"""`FrameModelSlots`: any batch-1 `FrameModel` as a `SlotModel`, one model instance per slot.

No batching gain (each slot runs alone), but the scheduler's semantics hold on every backend that
only implements `FrameModel` — the numpy reference included, which makes it the oracle the
scheduler's tests compare batched backends with. Prompt chunks fed without sampling are held back
and fed with the chunk that samples (a FrameModel always samples after feeding).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .config import CSMConfig
from .frame_inputs import check_token_values
from .protocols import FrameModel, SlotFeed

__all__ = ["FrameModelSlots", "check_slot_feeds"]


def check_slot_feeds(feeds: Sequence[SlotFeed], slots: int, positions: Sequence[int], config: CSMConfig):
    """The checks every SlotModel.step makes before touching its caches (shapes, slots, the
    backbone's window, ids against the vocabularies: csm_core.frame_inputs.check_token_values);
    returns the feeds' tokens (int64, masked positions zeroed) and masks (bool), each [S, K+1], in
    order."""
    width, window = config.audio_num_codebooks + 1, config.backbone.max_seq_len
    seen: set[int] = set()
    out = []
    for i, f in enumerate(feeds):
        if not isinstance(f, SlotFeed):
            raise TypeError(f"feeds[{i}] must be a SlotFeed, got {type(f).__name__}")
        if isinstance(f.slot, bool) or not isinstance(f.slot, (int, np.integer)) or not 0 <= f.slot < slots:
            raise ValueError(f"feeds[{i}].slot must be an integer in [0, {slots}), got {f.slot!r}")
        if f.slot in seen:
            raise ValueError(f"feeds[{i}]: slot {f.slot} is fed twice in one step")
        seen.add(int(f.slot))
        tokens, mask = f.tokens, f.mask
        if not (type(tokens) is np.ndarray and tokens.dtype == np.int64):  # the fast path: what the scheduler sends
            tokens = np.asarray(tokens)
            if not np.issubdtype(tokens.dtype, np.integer):
                raise ValueError(f"feeds[{i}].tokens must be integers, got dtype {tokens.dtype}")
        mask = mask if type(mask) is np.ndarray else np.asarray(mask)
        if tokens.ndim != 2 or tokens.shape[1] != width or tokens.shape[0] < 1:
            raise ValueError(f"feeds[{i}].tokens must have shape (S>=1, {width}), got {tokens.shape}")
        if mask.shape != tokens.shape or mask.dtype != np.bool_:
            raise ValueError(f"feeds[{i}].mask must be bool with the shape of tokens {tokens.shape}, got {mask.dtype} {mask.shape}")
        end = positions[f.slot] + tokens.shape[0]
        if end > window:
            raise ValueError(
                f"feeds[{i}]: slot {f.slot} at position {positions[f.slot]} + {tokens.shape[0]} rows exceeds "
                f"the {window}-position window"
            )
        check_token_values(tokens, mask, config, f"feeds[{i}].tokens")
        out.append((np.where(mask, tokens, 0) if not mask.all() else tokens.astype(np.int64, copy=False), mask))
    return out


class FrameModelSlots:
    """`SlotModel` over `make_model()` instances (batch 1 each), built as slots are opened."""

    def __init__(self, make_model: Callable[[], FrameModel]):
        self._make = make_model
        self._models: list[FrameModel] = []
        self._pending: list[list[SlotFeed]] = []
        self._positions: list[int] = []
        first = make_model()
        self.config = first.config
        self.name = f"{first.name}-slots"
        self._spare = [first]

    @property
    def slots(self) -> int:
        return len(self._models)

    def open_slots(self, slots: int) -> None:
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
            raise ValueError(f"slots must be an integer >= 1, got {slots!r}")
        while len(self._models) < slots:
            self._models.append(self._spare.pop() if self._spare else self._make())
        del self._models[slots:]
        self._pending = [[] for _ in range(slots)]
        self._positions = [0] * slots

    def admit(self, slot: int, seed: int, tokens: np.ndarray, mask: np.ndarray) -> int:
        self._slot(slot).reset(1, seed)
        self._pending[slot] = []
        self._positions[slot] = 0
        return 0

    def slot_position(self, slot: int) -> int:
        self._slot(slot)
        return self._positions[slot]

    def step(self, feeds: Sequence[SlotFeed]) -> np.ndarray:
        checked = check_slot_feeds(feeds, self.slots, self._positions, self.config)
        out = []
        for f, (tokens, mask) in zip(feeds, checked):
            self._positions[f.slot] += tokens.shape[0]
            self._pending[f.slot].append(SlotFeed(f.slot, tokens, mask))
            if f.params is None:
                continue
            rows = self._pending[f.slot]
            self._pending[f.slot] = []
            t = np.concatenate([r.tokens for r in rows])[None]
            m = np.concatenate([r.mask for r in rows])[None]
            out.append(np.asarray(self._models[f.slot].generate_frame(t, m, f.params))[0])
        K = self.config.audio_num_codebooks
        return np.stack(out).astype(np.int32) if out else np.zeros((0, K), np.int32)

    def _slot(self, slot: int) -> FrameModel:
        if isinstance(slot, bool) or not isinstance(slot, (int, np.integer)) or not 0 <= slot < self.slots:
            raise ValueError(f"slot must be an integer in [0, {self.slots}), got {slot!r}")
        return self._models[slot]
