"""``SlotRows``: the continuous-batching state behind ``MlxBackend``'s SlotModel methods.

Per slot: its position, which of its positions are real rows (an all-False mask row is padding,
never attended to, as on the FrameModel path), the rows its cache holds (prompt-prefix reuse), its
seed and how many frames it has sampled (its random stream's counter).

A step runs the backbone at most twice: once for every slot that feeds one row (the running
streams: one batched graph, S = 1) and once for the slots that feed several rows (prompt chunks,
right-padded to the longest with rows that are neither written nor sampled). Each call writes the
new keys/values at the slots' own positions (a scatter) and attends under a mask built from each
slot's length and valid rows. Only the feeds that sample run the depth decoder, all together.

Host memory: the held rows are int64/bool [slots, window, K+1] (~0.6 MiB per slot at CSM-1B
size), next to the device KV caches (csm_mlx.cache.SlotCache).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import mlx.core as mx
import numpy as np
from csm_core.config import CSMConfig
from csm_core.frame_inputs import check_slot_prompt
from csm_core.prompt import HeldRows
from csm_core.protocols import SamplingParams, SlotFeed
from csm_core.slots import check_slot_feeds

from .cache import SlotCache, SlotPlan
from .sampling import frame_keys

__all__ = ["SlotRows"]


@dataclass
class _Step:
    """One step's feeds as arrays (in feed order) — the host work of a step is vectorised, since it
    runs for hundreds of slots between device calls."""

    slots: np.ndarray  # int64 [n]
    starts: np.ndarray  # int64 [n]: each slot's position before this step
    lens: np.ndarray  # int64 [n]: rows fed
    first: np.ndarray  # int64 [n]: each feed's first row in tokens/mask
    tokens: np.ndarray  # int32 [sum(lens), K+1], masked entries zero
    mask: np.ndarray  # bool [sum(lens), K+1]
    sampled: np.ndarray  # bool [n]: the feed has params
    params: list  # SamplingParams of the sampled feeds, in feed order


class SlotRows:
    def __init__(self, config: CSMConfig, slots: int, cache: SlotCache):
        W = config.backbone.max_seq_len
        self.config, self.slots, self.cache, self.window = config, slots, cache, W
        self.positions = np.zeros(slots, np.int64)
        self.valid = np.zeros((slots, W), bool)  # real (non-padding) rows fed at each position
        self.held = HeldRows(slots, W, config.audio_num_codebooks + 1)
        self.admitted = np.zeros(slots, bool)
        self.seeds = np.zeros(slots, np.uint64)  # mod 2**64
        self.counters = np.zeros(slots, np.int64)  # frames sampled since admit

    # ---- admitting ----
    def check_slot(self, slot: object) -> int:
        if isinstance(slot, bool) or not isinstance(slot, (int, np.integer)) or not 0 <= slot < self.slots:
            raise ValueError(f"slot must be an integer in [0, {self.slots}), got {slot!r}")
        return int(slot)

    def admit(self, slot: object, seed: object, tokens: np.ndarray, mask: np.ndarray, reuse: bool) -> int:
        slot = self.check_slot(slot)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed must be an integer, got {type(seed).__name__} {seed!r}")
        tokens, mask = check_slot_prompt(tokens, mask, self.config)
        keep = 0
        if reuse and self.admitted[slot]:
            keep = self.held.shared_prefix_row(slot, np.where(mask, tokens, 0), mask, int(self.positions[slot]))
        self.positions[slot] = keep
        self.admitted[slot] = True
        self.seeds[slot] = int(seed) & 0xFFFFFFFFFFFFFFFF
        self.counters[slot] = 0
        return keep

    # ---- one step ----
    def check(self, feeds: Sequence[SlotFeed]) -> _Step:
        """Every check before anything is written: shapes, slots, window, token ranges, params."""
        checked = check_slot_feeds(feeds, self.slots, self.positions, self.config)
        slots = np.array([f.slot for f in feeds], np.int64)
        idle = ~self.admitted[slots]
        if idle.any():
            i = int(np.argmax(idle))
            raise ValueError(f"feeds[{i}]: slot {slots[i]} holds no request; admit() it first")
        params = []
        for i, f in enumerate(feeds):
            if f.params is not None:
                if not isinstance(f.params, SamplingParams):
                    raise TypeError(f"feeds[{i}].params must be a SamplingParams or None, got {type(f.params).__name__}")
                params.append(f.params)
        lens = np.array([t.shape[0] for t, _ in checked], np.int64)
        tokens = np.concatenate([t for t, _ in checked])
        return _Step(
            slots, self.positions[slots].copy(), lens, np.cumsum(lens) - lens, tokens.astype(np.int32),
            np.concatenate([m for _, m in checked]), np.array([f.params is not None for f in feeds]), params,
        )

    def record(self, st: _Step) -> None:
        """The fed rows into the held record and the valid map; the slots' positions advance."""
        slot, pos = np.repeat(st.slots, st.lens), np.repeat(st.starts, st.lens) + _within(st.lens)
        self.held.tokens[slot, pos] = st.tokens
        self.held.mask[slot, pos] = st.mask
        self.valid[slot, pos] = st.mask.any(axis=1)
        self.positions[st.slots] = st.starts + st.lens

    def plan(self, st: _Step, group: np.ndarray) -> tuple[SlotPlan, mx.array, mx.array, mx.array, np.ndarray]:
        """A backbone call over the feeds `group` (indices into st, distinct slots): the plan,
        tokens int32 / mask bool [M, S, K+1], the attention mask bool [M, 1, S, L], and for each of
        the group's feeds its last row's flat index into the call's [M·S] outputs.

        The call's shape is bucketed so that a few shapes serve every step (a GPU builds its
        kernels and attention plans per shape; a shape new at every step costs more than the step):
        one-row feeds run over all slots (M = slots, the idle ones as dummy rows), prompt chunks
        over M and S rounded up to powers of two (dummy rows repeat a slot, padding rows are
        neither written nor sampled), and attention over L rounded up to a multiple of 128."""
        slots, starts, lens = st.slots[group], st.starts[group], st.lens[group]
        S, m = int(lens.max()), len(group)
        if S == 1:
            lo, hi, rows, M = 0, self.slots, slots, self.slots
        else:
            S, M, rows = _pow2(S), _pow2(m), np.arange(m)
        L = min(self.window, -(-int((starts + lens).max()) // _L_STEP) * _L_STEP)
        within = _within(lens)
        r, src = np.repeat(rows, lens), np.repeat(st.first[group], lens) + within
        tokens = np.zeros((M, S, st.tokens.shape[1]), np.int32)
        mask = np.zeros(tokens.shape, bool)
        tokens[r, within], mask[r, within] = st.tokens[src], st.mask[src]
        q = np.zeros((M, S), np.int64)  # each query's position; dummy rows sit at 0
        q[rows] = starts[:, None] + np.minimum(np.arange(S)[None, :], lens[:, None] - 1)  # padding repeats the last row
        offset = np.zeros(M, np.int32)
        offset[rows] = starts
        vrows = np.zeros((M, L), bool)
        vrows[rows] = self.valid[slots, :L]
        k = np.arange(L)
        allowed = (k <= q[:, :, None]) & (vrows[:, None, :] | (k == q[:, :, None]))  # [M, S, L]
        select = None if r.size == M * S else mx.array((r * S + within).astype(np.int32))
        write = (mx.array(np.repeat(slots, lens).astype(np.int32)), mx.array((np.repeat(starts, lens) + within).astype(np.int32)))
        if S == 1:
            plan = SlotPlan(mx.array(offset), *write, select, L, lo=lo, hi=hi)
        else:
            gather = np.full(M, slots[0], np.int32)  # dummy rows read the first row's slot
            gather[:m] = slots
            plan = SlotPlan(mx.array(offset), *write, select, L, rows=mx.array(gather))
        return plan, mx.array(tokens), mx.array(mask), mx.array(allowed[:, None]), rows * S + lens - 1

    def frame_keys(self, st: _Step) -> tuple[np.ndarray, np.ndarray]:
        """The sampled feeds' random-stream keys: (seed, stream 0, frames the slot has sampled)."""
        slots = st.slots[st.sampled]
        return frame_keys(self.seeds[slots], np.zeros(slots.size, np.uint64), self.counters[slots])

    def advance(self, st: _Step) -> None:
        self.counters[st.slots[st.sampled]] += 1


_L_STEP = 128  # attention spans are rounded up to a multiple of this


def _pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def _within(lens: np.ndarray) -> np.ndarray:
    """0..len-1 for each length, concatenated."""
    return np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
