"""CpuBackend: csm_core's FrameModel (+ LogitsProbe) and SlotModel on the Cython kernels."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from csm_core.config import CSMConfig
from csm_core.frame_inputs import check_frame_inputs, check_probe_codes, check_slot_prompt
from csm_core.prompt import HeldRows
from csm_core.protocols import SamplingParams, SlotFeed
from csm_core.slots import check_slot_feeds

from . import _engine
from .features import active_isa, uses_repacked
from .gguf_io import release_pages
from .formats import names as format_names
from .quant import QTensor, check_format
from .topology import auto_threads
from .weights import engine_dims, prepare_weights

__all__ = ["CpuBackend", "default_threads", "resolve_threads"]


def default_threads() -> int:
    """CSM_NUM_THREADS (a count, or "auto"), else auto: one thread per physical core this process
    may use, capped by its cgroup CPU quota (csm_cpu.topology.auto_threads)."""
    env = os.environ.get("CSM_NUM_THREADS", "").strip().lower()
    if env and env != "auto":
        try:
            n = int(env)
        except ValueError:
            raise ValueError(f"CSM_NUM_THREADS={env!r} is not an integer or 'auto'") from None
        if n < 1:
            raise ValueError(f"CSM_NUM_THREADS must be >= 1, got {n}")
        return n
    return auto_threads()


def resolve_threads(threads) -> int:
    """A thread count from threads= (None: default_threads(); "auto": auto_threads(); else an
    integer >= 1, also as a string)."""
    if threads is None:
        return default_threads()
    bad = ValueError(f"threads must be an integer >= 1 or 'auto', got {threads!r}")
    if isinstance(threads, str):
        t = threads.strip().lower()
        if t == "auto":
            return auto_threads()
        if not t.isdigit():
            raise bad
        n = int(t)
    else:
        try:
            n = int(threads)
        except (TypeError, ValueError):
            raise bad from None
        if n != threads or isinstance(threads, bool):
            raise bad
    if n < 1:
        raise bad
    return n


def _chunk_kib() -> int:
    """Largest work item of a product in KiB ($CSM_CPU_CHUNK_KIB, a tuning knob; default 256)."""
    env = os.environ.get("CSM_CPU_CHUNK_KIB", "").strip()
    if not env:
        return 256
    if not env.isdigit() or int(env) < 32:
        raise ValueError(f"CSM_CPU_CHUNK_KIB must be an integer >= 32, got {env!r}")
    return int(env)


def _legacy_prefill() -> int:
    """$CSM_CPU_PREFILL=legacy: several positions on the kernels from before the prefill rework
    (Q8_0 pair kernel without the scale table, Q4_0 pairs instead of 4-vector tiles),
    bit-identical results; for before/after benchmarks."""
    env = os.environ.get("CSM_CPU_PREFILL", "").strip()
    if env not in ("", "legacy", "tiled"):
        raise ValueError(f"CSM_CPU_PREFILL must be 'legacy' or 'tiled', got {env!r}")
    return int(env == "legacy")


def _repack_in_place(weights: dict) -> None:
    """Row-interleave the matrices the products stream (Q8_0, Q4_0, bf16; not the embedding
    tables, which are looked up row by row), one at a time so memory grows by one tensor at most;
    a source in a file map (GGUF) gives its pages back once copied."""
    for name, t in weights.items():
        if isinstance(t, QTensor) and not name.endswith("_embeddings.weight"):
            packed = t.repack4()
            if packed is not t:
                release_pages(t.data)
            weights[name] = packed


class CpuBackend:
    """CSM-1B on the CPU. Build from (config, canonical weights, quant) or from a GGUF file.

    quant: a csm_cpu.formats name: "f32", "bf16", "q8_0", "q4_0" or "q4_k" (weights are quantized at
    load, tensor by tensor).
    threads: kernel threads, or "auto" (default: CSM_NUM_THREADS, else "auto": one per physical
    core this process may use, capped by its cgroup CPU quota; see csm_cpu.topology).

    Two ways to run it, on one set of caches: the FrameModel path (`reset(B, seed)` then
    `generate_frame`: B rows that start together and share a position) and the SlotModel path
    (`open_slots(n)`, `admit`, `step`: continuous batching, each slot with its own position,
    sampling parameters and random stream). A slot's codes equal, bit for bit, the same request
    run alone through `reset(1, seed)` / `generate_frame`: no product depends on the other rows.
    """

    # ---- the backend contract (csm_core.protocols.BackendClass): what the app reads ----
    name = "cpu"
    quants = format_names()  # csm_cpu.formats
    default_quant = "f32"
    file_layout = "gguf"
    file_patterns = ("*.gguf",)

    @classmethod
    def preference(cls) -> int:
        return 1  # runs anywhere; a backend for this machine's accelerator ranks higher

    @classmethod
    def build(cls, config: CSMConfig, weights, *, quant: str | None = None, threads: int | None = None) -> "CpuBackend":
        return cls(config, weights, quant or cls.default_quant, threads=threads)

    @classmethod
    def recognizes(cls, path) -> bool:
        return Path(path).suffix == ".gguf"  # the reader checks the header, with a clear error

    @classmethod
    def open_file(cls, path, *, threads: int | None = None) -> "CpuBackend":
        return cls.from_gguf(path, threads=threads)

    @classmethod
    def convert(cls, config: CSMConfig, weights, dst, *, quant: str | None = None) -> Path:
        from .gguf_io import write_gguf

        dst = Path(dst)
        dst.parent.mkdir(parents=True, exist_ok=True)
        write_gguf(dst, config, weights, quant or "q8_0")
        return dst

    @classmethod
    def describe(cls) -> str:
        from .features import cpu_features

        f = cpu_features()
        return f"{f['active']} kernels (detected {f['detected']}), {default_threads()} threads, openmp {f['openmp']}"

    def __init__(
        self,
        config: CSMConfig,
        weights: Mapping[str, np.ndarray] | None = None,
        quant: str = "f32",
        *,
        threads: int | None = None,
        batch_size: int = 1,
        _prepared: dict | None = None,
    ) -> None:
        self.config = config
        self.threads = resolve_threads(threads)
        if _prepared is None:
            if weights is None:
                raise ValueError("CpuBackend needs a weight mapping (or use CpuBackend.from_gguf)")
            self.quant = check_format(quant)
            _prepared = prepare_weights(config, weights, quant, threads=self.threads)
        else:
            self.quant = quant
        if uses_repacked():
            _repack_in_place(_prepared)
        self._weights = _prepared
        self._dims = engine_dims(config)
        self._engine: _engine.Engine | None = None
        self._slots = 0  # > 0 while the caches hold slots (open_slots) rather than a batch (reset)
        self._controller = None
        self.reuse_prefix = True
        self._legacy = bool(_legacy_prefill())
        self.reused_positions = 0
        self.reset(batch_size)

    @classmethod
    def from_gguf(cls, path: str | Path, *, threads: int | None = None, batch_size: int = 1) -> "CpuBackend":
        """Memory-map a quantized CSM GGUF file written by csm_cpu.gguf_io.write_gguf."""
        from .gguf_io import read_gguf

        config, quant, prepared = read_gguf(path)
        return cls(config, quant=quant, threads=threads, batch_size=batch_size, _prepared=prepared)

    @property
    def legacy_prefill(self) -> bool:
        """Run prompts on the kernels from before the prefill rework (same results bit for bit;
        for before/after benchmarks; default from $CSM_CPU_PREFILL)."""
        return self._legacy

    @legacy_prefill.setter
    def legacy_prefill(self, on: bool) -> None:
        self._legacy = bool(on)
        if self._engine is not None:
            self._engine.set_legacy(int(self._legacy))

    def set_threads(self, threads: int) -> None:
        """Change the kernel thread count (rebuilds the caches: call reset() or open_slots() again after)."""
        self.threads = resolve_threads(threads)
        slots, self._engine = self._slots, None
        if slots:
            self.open_slots(slots)
        else:
            self.reset(self._batch)

    def bytes_per_slot_position(self) -> int:
        """Cache bytes one row (batch row or slot) holds per context position: the backbone's
        keys and values (2 x layers x kv_heads x head_dim fp32; 65,536 for CSM-1B), its padding
        flag and the prompt row kept for prefix reuse (K+1 int64 tokens + mask)."""
        d = self._dims["backbone"]
        kvd = d["num_kv_heads"] * (d["embed_dim"] // d["num_heads"])
        K1 = self.config.audio_num_codebooks + 1
        return 2 * d["num_layers"] * kvd * 4 + 1 + K1 * 9

    def bytes_per_frame(self) -> int:
        """Weight bytes one batch-1 frame streams: backbone + c0 head, 31 x (decoder, projection, one head)."""
        w, cfg = self._weights, self.config
        backbone = sum(v.nbytes for k, v in w.items() if k.startswith("backbone.layers.") and k.endswith(".weight"))
        decoder = sum(v.nbytes for k, v in w.items() if k.startswith("decoder.layers.") and k.endswith(".weight"))
        steps = cfg.audio_num_codebooks - 1
        return (backbone + w["codebook0_head.weight"].nbytes
                + steps * (decoder + w["projection.weight"].nbytes + w["audio_head.0"].nbytes))

    # ---- FrameModel ----
    @property
    def position(self) -> int:
        return 0 if self._fresh is not None else self._engine.position

    @property
    def batch_size(self) -> int:
        return self._batch

    def reset(self, batch_size: int = 1, seed: int | None = None) -> None:
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self._rows(int(batch_size))
        self._slots = 0
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1, np.uint64)[0])
        # The caches are emptied when the next prompt arrives: the part of it that repeats what
        # they hold (the voice context, earlier sentences) is then kept instead of recomputed.
        self._fresh = int(seed)

    def _rows(self, rows: int) -> None:
        """Caches for `rows` rows (kept when they already have that many)."""
        if self._engine is None or rows != self._batch:
            self._engine = None  # free the old caches first
            self._engine = _engine.Engine(self._dims, self._weights, rows, self.threads, active_isa(), _chunk_kib(),
                                         int(self._legacy))
            self._batch = rows
            maxpos = self._dims["backbone"]["max_seq_len"]
            # what the backbone cache holds, row by row: prompt-prefix reuse compares a new prompt with it
            self._held = HeldRows(self._batch, maxpos, self.config.audio_num_codebooks + 1)
            self._engine.reset(0)

    def generate_frame(self, tokens: np.ndarray, mask: np.ndarray, params: SamplingParams) -> np.ndarray:
        if self._slots:
            raise RuntimeError("the caches hold slots (open_slots): call reset(batch_size, seed) before generate_frame")
        tokens, mask = self._check_inputs(tokens, mask)
        limit = self._limit(params)
        with self._blas_single_thread():
            self._run_backbone(tokens, mask)
            # topk >= limit keeps every code: clamped so a huge topk fits the kernel's C int
            return self._engine.decode(float(params.temperature), min(int(params.topk), limit), limit)

    def _run_backbone(self, tokens: np.ndarray, mask: np.ndarray) -> None:
        """Backbone over the new positions; right after reset(), the longest prefix of the prompt
        that the cache already holds at the same positions is reused (the results are the same
        bit for bit: every position's products are computed alike one by one or in a prompt)."""
        keep = 0
        if self._fresh is not None:
            if self.reuse_prefix:
                keep = self._held.shared_prefix(tokens, mask, self._engine.position)
            self._engine.reset(self._fresh, keep)
            self._fresh = None
            self.reused_positions = keep
            tokens, mask = tokens[:, keep:], mask[:, keep:]
        start = self._engine.position
        self._engine.backbone(np.ascontiguousarray(tokens), np.ascontiguousarray(mask))
        self._held.record(start, tokens, mask)

    # ---- SlotModel ----
    @property
    def slots(self) -> int:
        """Slots open (0 while the caches hold a FrameModel batch)."""
        return self._slots

    def open_slots(self, slots: int) -> None:
        """Caches for `slots` independent rows, replacing the batch or slots held before (caches of
        the same row count are kept, so an admitted prompt may reuse what a row held).

        Memory, allocated once for the whole window (CSM-1B, 2 threads): slots x max_seq_len x
        bytes_per_slot_position() (65,834 B per slot per position: ~129 MiB per slot for 2048
        positions), + ~0.8 MiB per slot (decoder caches and buffers), + ~12 MiB for one backbone
        call's buffers (64 vectors; max(64, slots) of them). The zeroed KV pages become resident as
        positions are written, so resident memory grows with the context each slot has used."""
        if isinstance(slots, bool) or not isinstance(slots, (int, np.integer)) or slots < 1:
            raise ValueError(f"slots must be an integer >= 1, got {slots!r}")
        self._rows(int(slots))
        self._slots = int(slots)
        self._fresh = None

    def slot_position(self, slot: int) -> int:
        return self._engine.row_position(self._check_slot(slot))

    def admit(self, slot: int, seed: int | None, tokens: np.ndarray, mask: np.ndarray) -> int:
        """Start a request in `slot`: its cache is emptied after the leading rows of the prompt
        tokens/mask [S, K+1] it already holds (prefix reuse, at most S-1; returned), and it draws
        from the random stream of `seed` (the one reset(1, seed) gives; None: a fresh random seed).
        Nothing else changes."""
        slot = self._check_slot(slot)
        tokens, mask = check_slot_prompt(tokens, mask, self.config)
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1, np.uint64)[0])
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"admit: seed must be an integer or None, got {seed!r}")
        keep = 0
        if self.reuse_prefix:
            held = self._engine.row_position(slot)
            keep = self._held.shared_prefix_row(slot, np.where(mask, tokens, 0), mask, held)
        self._engine.reset_row(slot, int(seed), keep)
        return keep

    def step(self, feeds: Sequence[SlotFeed]) -> np.ndarray:
        """Feed every slot's rows (ONE backbone pass for all, nmax vectors per parallel region),
        then ONE decode for the feeds with params, each with its own temperature, top-k and code
        limit: int32 [n_sampled, K] in feed order. Every input is checked before any cache changes."""
        if not self._slots:
            raise RuntimeError("no slots are open: call open_slots(n) before step()")
        cfg = self.config
        K = cfg.audio_num_codebooks
        eng = self._engine
        positions = [eng.row_position(s) for s in range(self._slots)]
        checked = check_slot_feeds(feeds, self._slots, positions, cfg)
        sampled = []
        for i, f in enumerate(feeds):
            if f.params is not None:
                if not isinstance(f.params, SamplingParams):
                    raise TypeError(f"feeds[{i}].params must be SamplingParams or None, got {type(f.params).__name__}")
                sampled.append(i)
        if not feeds:
            return np.zeros((0, K), np.int32)
        slots = np.array([f.slot for f in feeds], np.intc)
        counts = np.array([t.shape[0] for t, _ in checked], np.intc)
        out = np.full(len(feeds), -1, np.intc)
        out[sampled] = np.arange(len(sampled), dtype=np.intc)
        tokens = np.ascontiguousarray(np.concatenate([t for t, _ in checked]))
        mask = np.ascontiguousarray(np.concatenate([m for _, m in checked]), dtype=np.uint8)
        with self._blas_single_thread():
            eng.feed(slots, counts, out, tokens, mask)
            for f, (t, m), start in zip(feeds, checked, (positions[s] for s in slots)):
                self._held.record_row(int(f.slot), start, t, m)
            if not sampled:
                return np.zeros((0, K), np.int32)
            params = [feeds[i].params for i in sampled]
            V = cfg.audio_vocab_size
            return eng.decode_rows(
                slots[sampled],
                np.array([p.temperature for p in params], np.float32),
                np.array([min(int(p.topk), V) for p in params], np.intc),
                np.array([self._limit(p) for p in params], np.intc),
            )

    def _check_slot(self, slot) -> int:
        if isinstance(slot, bool) or not isinstance(slot, (int, np.integer)) or not 0 <= slot < self._slots:
            if not self._slots:
                raise RuntimeError("no slots are open: call open_slots(n) first")
            raise ValueError(f"slot must be an integer in [0, {self._slots}), got {slot!r}")
        return int(slot)

    # ---- LogitsProbe ----
    def teacher_forced_logits(self, tokens: np.ndarray, mask: np.ndarray, codes: np.ndarray):
        tokens, mask = self._check_inputs(tokens, mask, fresh=True)
        K, V = self.config.audio_num_codebooks, self.config.audio_vocab_size
        codes = np.ascontiguousarray(check_probe_codes(codes, self.config, tokens.shape[0]), dtype=np.int32)
        self._rows(tokens.shape[0])  # the probe's rows (a later generate_frame needs reset() anyway)
        probe = np.zeros((self._batch, K, V), np.float32)
        self._fresh = 0
        self._slots = 0
        with self._blas_single_thread():
            self._run_backbone(tokens, mask)
            self._engine.decode(0.0, 1, V, forced=codes, probe=probe)
        return probe[:, 0].copy(), probe[:, 1:].copy()

    # ---- helpers ----
    def _limit(self, params: SamplingParams) -> int:
        V = self.config.audio_vocab_size
        return min(V, params.codec_size) if params.mask_undecodable else V

    def _check_inputs(self, tokens, mask, fresh: bool = False):
        """csm_core's FrameModel input checks (a probe, `fresh`, may hold any batch and starts at
        position 0) -> int64 tokens, uint8 mask, both C-contiguous."""
        tokens, mask = check_frame_inputs(tokens, mask, self.config, batch_size=None if fresh else self._batch,
                                          position=0 if fresh else self.position)  # fmt: skip
        return np.ascontiguousarray(tokens), np.ascontiguousarray(mask, dtype=np.uint8)

    def _blas_single_thread(self):
        """numpy's BLAS stays at one thread while the kernels own the cores."""
        if self._controller is None:
            from threadpoolctl import ThreadpoolController

            self._controller = ThreadpoolController()
        return self._controller.limit(limits=1, user_api="blas")
