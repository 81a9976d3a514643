"""``SlotRows``: the continuous-batching state behind ``MlxBackend``'s SlotModel methods.

Per slot: its position, which of its positions are real rows (an all-False mask row is padding,
never attended to, as on the FrameModel path), the rows its cache holds (prompt-prefix reuse), its
seed and how many frames it has sampled (its random stream's counter).

A step runs the backbone at most twice: once for every slot that feeds one row (the running
streams: one batched graph, S = 1) and once for the slots that feed several rows (prompt chunks,
right-padded to the longest with rows that are neither written nor sampled). Each call writes the
new keys/values at the slots' own positions (a scatter) and attends under a mask built from each
slot's length and valid rows. Only the feeds that sample run the depth decoder, all together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import mlx.core as mx
import numpy as np
from csm_core.config import CSMConfig
from csm_core.prompt import HeldRows
from csm_core.protocols import SamplingParams, SlotFeed
from csm_core.slots import check_slot_feeds

from .cache import SlotCache, SlotPlan

__all__ = ["SlotRows"]


@dataclass
class _Fed:
    index: int  # position in the step's feeds
    slot: int
    start: int  # the slot's position before this step
    tokens: np.ndarray  # int32 [S, K+1]
    mask: np.ndarray  # bool [S, K+1]


class SlotRows:
    def __init__(self, config: CSMConfig, slots: int, cache: SlotCache):
        W = config.backbone.max_seq_len
        self.config, self.slots, self.cache, self.window = config, slots, cache, W
        self.positions = np.zeros(slots, np.int64)
        self.valid = np.zeros((slots, W), bool)  # real (non-padding) rows fed at each position
        self.held = HeldRows(slots, W, config.audio_num_codebooks + 1)
        self.admitted = np.zeros(slots, bool)
        self.seeds = [0] * slots
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
        K = self.config.audio_num_codebooks
        tokens, mask = np.asarray(tokens), np.asarray(mask)
        if tokens.ndim != 2 or tokens.shape[1] != K + 1 or tokens.shape[0] < 1:
            raise ValueError(f"admit: tokens must have shape (S>=1, {K + 1}), got {tokens.shape}")
        if mask.shape != tokens.shape or mask.dtype != np.bool_:
            raise ValueError(f"admit: mask must be bool with the shape of tokens {tokens.shape}, got {mask.dtype} {mask.shape}")
        if tokens.shape[0] > self.window:
            raise ValueError(f"admit: a {tokens.shape[0]}-row prompt exceeds the {self.window}-position window")
        keep = 0
        if reuse and self.admitted[slot]:
            keep = self.held.shared_prefix_row(slot, np.where(mask, tokens, 0), mask, int(self.positions[slot]))
        self.positions[slot] = keep
        self.admitted[slot] = True
        self.seeds[slot] = int(seed)
        self.counters[slot] = 0
        return keep

    # ---- one step ----
    def check(self, feeds: Sequence[SlotFeed]) -> list[_Fed]:
        """Every check before anything is written: shapes, slots, window, token ranges, params."""
        K, V, T = self.config.audio_num_codebooks, self.config.audio_vocab_size, self.config.text_vocab_size
        checked = check_slot_feeds(feeds, self.slots, K + 1, self.positions, self.window)
        out = []
        for i, (f, (tokens, mask)) in enumerate(zip(feeds, checked)):
            if not self.admitted[f.slot]:
                raise ValueError(f"feeds[{i}]: slot {f.slot} holds no request; admit() it first")
            if f.params is not None and not isinstance(f.params, SamplingParams):
                raise TypeError(f"feeds[{i}].params must be a SamplingParams or None, got {type(f.params).__name__}")
            if tokens.min() < 0 or tokens[:, :K].max() >= V or tokens[:, K].max() >= T:
                raise ValueError(f"feeds[{i}]: token ids out of range (audio codes must be in [0, {V}), text ids in [0, {T}))")
            out.append(_Fed(i, int(f.slot), int(self.positions[f.slot]), tokens.astype(np.int32), mask))
        return out

    def record(self, fed: Sequence[_Fed]) -> None:
        for f in fed:
            S = f.tokens.shape[0]
            self.held.record_row(f.slot, f.start, f.tokens, f.mask)
            self.valid[f.slot, f.start : f.start + S] = f.mask.any(axis=1)
            self.positions[f.slot] = f.start + S

    def plan(self, fed: Sequence[_Fed]) -> tuple[SlotPlan, mx.array, mx.array, mx.array, np.ndarray]:
        """A backbone call over `fed` (sorted by slot): the plan, tokens int32 / mask bool
        [m, S, K+1], the attention mask bool [m, 1, S, L], and for each feed its last row's flat
        index into the call's [m·S] outputs."""
        slots = np.array([f.slot for f in fed])
        lens = np.array([f.tokens.shape[0] for f in fed])
        S, m = int(lens.max()), len(fed)
        lo, hi = int(slots.min()), int(slots.max()) + 1
        ranged = hi - lo == m or (S == 1 and hi - lo <= 2 * m)  # a slice of the cache, few dummy rows
        rows = slots - lo if ranged else np.arange(m)
        M = hi - lo if ranged else m
        width = fed[0].tokens.shape[1]
        tokens = np.zeros((M, S, width), np.int32)
        mask = np.zeros((M, S, width), bool)
        offset = np.zeros(M, np.int32)
        q = np.zeros((M, S), np.int64)  # each query's position; dummy rows sit at 0
        for r, f, n in zip(rows, fed, lens):
            tokens[r, :n], mask[r, :n], offset[r] = f.tokens, f.mask, f.start
            q[r] = f.start + np.minimum(np.arange(S), n - 1)  # padded queries repeat the last real one
        L = int((np.array([f.start for f in fed]) + lens).max())
        vrows = np.zeros((M, L), bool)
        vrows[rows] = self.valid[slots, :L]
        k = np.arange(L)
        allowed = (k <= q[:, :, None]) & (vrows[:, None, :] | (k == q[:, :, None]))  # [M, S, L]
        flat = np.concatenate([r * S + np.arange(n) for r, n in zip(rows, lens)])
        write_slot = np.repeat(slots, lens)
        write_pos = np.concatenate([f.start + np.arange(n) for f, n in zip(fed, lens)])
        select = None if flat.size == M * S else mx.array(flat.astype(np.int32))
        plan = SlotPlan(
            mx.array(offset), mx.array(write_slot.astype(np.int32)), mx.array(write_pos.astype(np.int32)), select, L,
            lo=lo if ranged else None, hi=hi if ranged else None, rows=None if ranged else mx.array(slots.astype(np.int32)),
        )
        return plan, mx.array(tokens), mx.array(mask), mx.array(allowed[:, None]), rows * S + lens - 1

    def sampled(self, fed: Sequence[_Fed], feeds: Sequence[SlotFeed]) -> tuple[list[int], list[SamplingParams], tuple]:
        """The sampled feeds' indices, params and random-stream inputs (seed, stream 0, counter)."""
        idx = [f.index for f in fed if feeds[f.index].params is not None]
        slots = [feeds[i].slot for i in idx]
        seeds = [self.seeds[s] for s in slots]
        counters = [int(self.counters[s]) for s in slots]
        return idx, [feeds[i].params for i in idx], (seeds, [0] * len(idx), counters)

    def advance(self, feeds: Sequence[SlotFeed], idx: Sequence[int]) -> None:
        for i in idx:
            self.counters[feeds[i].slot] += 1
