"""``MlxBackend``: the CSM FrameModel (+ LogitsProbe) and SlotModel on MLX.

One frame = backbone step on the new rows → c0 → 31 depth-decoder steps, sampled on the device and
built as one lazy graph that is evaluated once (``mx.eval`` of the codes and the KV caches).
Left-padded batches: a row whose mask is all False is padding; no real row ever attends to it.

Both paths sample with per-row random streams (csm_mlx.sampling): row b of ``reset(B, seed)`` draws
from (seed, stream b, frame index), a slot from (its seed, stream 0, its frame index), so a seeded
request gives the same codes through ``reset(1, seed)`` and in any slot next to any others (up to
the float rounding of different batch shapes; exact on mlx[cpu] in the tests).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import mlx.core as mx
import numpy as np
from csm_core.config import CSMConfig
from csm_core.frame_inputs import check_frame_inputs, check_probe_codes
from csm_core.prompt import HeldRows
from csm_core.protocols import SamplingParams, SlotFeed

from .cache import KVCache, SlotCache
from .model import CSMModel, resolve_dtype
from .quantize import quantize_model
from .sampling import RowSampling, frame_keys
from .slots import SlotRows

__all__ = ["MlxBackend"]


class MlxBackend:
    """FrameModel and SlotModel on MLX. Build with ``MlxBackend(config, weights)`` (a canonical dict) or
    ``MlxBackend.load(path)``. ``reset()`` selects the FrameModel path, ``open_slots()`` the slots."""

    # ---- the backend contract (csm_core.protocols.BackendClass): what the app reads ----
    name = "mlx"
    quants = ("f32", "bf16", "q8_0", "q4_0", "q4_k")
    default_quant = "f32"
    file_layout = "mlx"
    file_patterns = ("*.safetensors",)
    # the app's weight formats as MLX (dtype, affine quantization bits): q4_k has no MLX twin, so
    # it takes MLX's own 4-bit groups as q4_0 does
    QUANT = {"f32": ("float32", None), "bf16": ("bfloat16", None), "q8_0": ("bfloat16", 8),
             "q4_0": ("bfloat16", 4), "q4_k": ("bfloat16", 4)}  # fmt: skip

    @classmethod
    def preference(cls) -> int:
        import platform
        import sys

        if sys.platform == "darwin" and platform.machine() == "arm64":
            return 10  # Apple silicon: MLX is the fast path
        return 5 if mx.default_device().type == mx.gpu else -1  # mlx[cpu] on Linux is for tests only

    @classmethod
    def build(cls, config: CSMConfig, weights, *, quant: str | None = None, threads: int | None = None,
              group_size: int = 64) -> "MlxBackend":  # fmt: skip
        if threads is not None:
            import logging

            logging.getLogger(__name__).info("the mlx backend picks its own threads; threads=%s is ignored", threads)
        dtype, bits = cls.QUANT[quant or cls.default_quant]
        return cls(config, weights, dtype=dtype, quant_bits=bits, group_size=group_size)

    @classmethod
    def recognizes(cls, path) -> bool:
        from .convert import FORMAT

        from csm_core.weights.safetensors_io import read_safetensors_header

        path = Path(path)
        if path.suffix != ".safetensors" or not path.is_file():
            return False
        try:
            return read_safetensors_header(path)[1].get("format") == FORMAT
        except (OSError, ValueError):
            return False

    @classmethod
    def open_file(cls, path, *, threads: int | None = None) -> "MlxBackend":
        return cls.load(path)

    @classmethod
    def convert(cls, config: CSMConfig, weights, dst, *, quant: str | None = None, group_size: int = 64) -> Path:
        from .convert import convert_weights

        dtype, bits = cls.QUANT[quant or "bf16"]
        return Path(convert_weights(config, weights, dst, dtype=dtype, quant_bits=bits, group_size=group_size))

    @classmethod
    def describe(cls) -> str:
        return f"MLX {mx.__version__} on {mx.default_device()}"

    def __init__(
        self,
        config: CSMConfig,
        weights: Mapping[str, object] | None = None,
        *,
        dtype: str = "float32",
        quant_bits: int | None = None,
        group_size: int = 64,
        model: CSMModel | None = None,
        compile: bool | None = None,
    ):
        if (weights is None) == (model is None):
            raise ValueError("give exactly one of weights (a canonical dict) or model (a loaded CSMModel)")
        if model is not None and model.config != config:
            raise ValueError(f"model was built for {model.config}, not {config}")
        self.config = config
        if model is None:
            model = CSMModel(config).load_canonical(weights, resolve_dtype(dtype))
            if quant_bits is not None:
                quantize_model(model, quant_bits, group_size)
        self.model = model
        # mx.compile fuses the 31 decoder steps into one traced graph: it pays on a GPU (fewer, fused
        # kernels). On the CPU backend every fused kernel is built with the C++ compiler at first use
        # (minutes), so it is off there by default.
        self.compiled = (mx.default_device().type == mx.gpu) if compile is None else bool(compile)
        self._frame_fns: dict[tuple[int, bool], object] = {}
        self.reuse_prefix = True
        self._slots: SlotRows | None = None
        self.reset()

    @classmethod
    def load(cls, path: str | Path, *, dtype: str | None = None, compile: bool | None = None) -> "MlxBackend":
        """A file/directory written by ``csm_mlx.convert``, or any checkpoint csm_core.weights reads."""
        from .convert import load_model

        model = load_model(path, dtype=dtype)
        return cls(model.config, model=model, compile=compile)

    # ---- state ----
    def reset(self, batch_size: int = 1, seed: int | None = None) -> None:
        """Start a new prompt. The caches are kept until it arrives: the part of it that repeats
        what they hold at the same positions (a voice context, earlier sentences) is not fed
        again (`reuse_prefix`; the kept rows were computed in other chunks, so results match a
        fresh run to float rounding, not bit for bit). Row b samples from the random stream
        (seed, b, frame index); seed None draws a fresh one."""
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise TypeError(f"seed must be an integer or None, got {type(seed).__name__} {seed!r}")
        self._slots = None  # the FrameModel path replaces any slots
        if getattr(self, "batch_size", None) != batch_size:
            self._new_caches(int(batch_size))
        self._fresh = True
        self.reused_positions = 0
        self._seed = int(np.random.SeedSequence().entropy if seed is None else seed)
        self._frames = 0  # frames sampled since reset: the random streams' counter

    def _new_caches(self, batch_size: int) -> None:
        self.batch_size = batch_size
        cfg = self.config.backbone
        self._cache: list[KVCache] = self.model.backbone.make_cache(batch_size, cfg.max_seq_len, self.model.dtype)
        self._valid = np.zeros((batch_size, 0), dtype=bool)  # [B, filled positions]: False = padding
        # what the cache holds, row by row: prompt-prefix reuse compares a new prompt with it
        self._held = HeldRows(batch_size, cfg.max_seq_len, self.config.audio_num_codebooks + 1)
        self._fresh = False

    @property
    def position(self) -> int:
        return 0 if self._fresh else self._valid.shape[1]

    # ---- inputs ----
    def _check(self, tokens: np.ndarray, mask: np.ndarray, probe: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """csm_core's FrameModel input checks (a probe may hold any batch, from position 0)."""
        tokens, mask = check_frame_inputs(tokens, mask, self.config, batch_size=None if probe else self.batch_size,
                                          position=0 if probe else self.position)  # fmt: skip
        return tokens.astype(np.int32), mask

    def _attention_mask(self, S: int):
        """Backbone mask for S new queries over all filled keys: causal, real keys only (each row may see itself)."""
        valid = self._valid  # [B, T] including the new rows
        if valid.all():
            return "causal" if S > 1 else None
        T = valid.shape[1]
        q = np.arange(T - S, T)[:, None]
        k = np.arange(T)[None, :]
        allowed = (k <= q) & (valid[:, None, :] | (k == q))  # [B, S, T]; the diagonal keeps padding rows NaN-free
        return mx.array(allowed[:, None])  # [B, 1, S, T]

    def _backbone(self, tokens: np.ndarray, mask: np.ndarray) -> mx.array:
        """Feed checked rows (int32 tokens, bool mask); return the normed hidden state at the last
        position [B, Db] (lazy)."""
        if self._fresh:
            keep = self._held.shared_prefix(tokens, mask, self._valid.shape[1]) if self.reuse_prefix else 0
            for c in self._cache:
                c.offset = keep
            self._valid, self._fresh, self.reused_positions = self._valid[:, :keep], False, keep
            tokens, mask = tokens[:, keep:], mask[:, keep:]
        self._held.record(self.position, tokens, mask)
        self._valid = np.concatenate([self._valid, mask.any(axis=2)], axis=1)
        emb = self.model.embed_frames(mx.array(tokens), mx.array(mask))
        h = self.model.backbone_hidden(emb, self._cache, self._attention_mask(tokens.shape[1]))
        return h[:, -1]

    # ---- FrameModel ----
    def generate_frame(self, tokens: np.ndarray, mask: np.ndarray, params: SamplingParams) -> np.ndarray:
        """Feed [B, S, K+1] rows at the current position → int32 codes [B, K]."""
        if self._slots is not None:
            raise RuntimeError("slots are open: use step(), or reset() to return to the FrameModel path")
        B = self.batch_size
        keys = frame_keys([self._seed] * B, range(B), [self._frames] * B)
        last_h = self._backbone(*self._check(tokens, mask))
        codes = self._decode(last_h, [params] * B, keys)
        mx.eval(codes, [c.state for c in self._cache])
        self._frames += 1
        return np.array(codes, dtype=np.int32)

    def _decode(self, last_h: mx.array, params: list[SamplingParams], keys) -> mx.array:
        """c0 + depth decoder + sampling for rows last_h [R, Db] → codes [R, K] (lazy). Compiled:
        rows are padded to a power of two so that a few traced graphs serve every row count."""
        V = self.config.audio_vocab_size
        R = last_h.shape[0]
        if not self.compiled:
            return self.model.decode_frame(last_h, RowSampling.build(params, keys, V))
        rows = 1 << max(0, R - 1).bit_length()
        rs = RowSampling.build(params, keys, V, rows)
        if rows > R:
            last_h = mx.concatenate([last_h, mx.zeros((rows - R, last_h.shape[1]), last_h.dtype)])
        fn = self._frame_fns.get((rs.kmax, rs.greedy))
        if fn is None:
            model, kmax, greedy = self.model, rs.kmax, rs.greedy
            fn = mx.compile(lambda h, t, k, lim, k0, k1: model.decode_frame(h, RowSampling(t, k, lim, k0, k1, kmax, greedy)))
            self._frame_fns[(kmax, greedy)] = fn
        return fn(last_h, *rs.arrays())[:R]

    # ---- SlotModel ----
    @property
    def slots(self) -> int:
        return 0 if self._slots is None else self._slots.slots

    def open_slots(self, slots: int) -> None:
        """KV caches for `slots` independent rows, allocated once for the whole window (see
        csm_mlx.cache.SlotCache for the memory: 32 KiB per slot per position in bf16 at CSM-1B
        size, 64 MiB per slot); replaces the FrameModel batch and any slots held before."""
        if isinstance(slots, bool) or not isinstance(slots, (int, np.integer)) or slots < 1:
            raise ValueError(f"slots must be an integer >= 1, got {slots!r}")
        b = self.config.backbone
        self._slots = None
        self._new_caches(1)  # frees the FrameModel caches
        cache = SlotCache(b.num_layers, int(slots), b.num_kv_heads, b.head_dim, b.max_seq_len, self.model.dtype)
        self._slots = SlotRows(self.config, int(slots), cache)

    def admit(self, slot: int, seed: int, tokens: np.ndarray, mask: np.ndarray) -> int:
        """Start a request in `slot` (random stream of `seed`); returns the leading prompt rows its
        cache already holds (`reuse_prefix`), which the caller does not feed again."""
        return self._open().admit(slot, seed, tokens, mask, self.reuse_prefix)

    def slot_position(self, slot: int) -> int:
        rows = self._open()
        return int(rows.positions[rows.check_slot(slot)])

    def step(self, feeds: Sequence[SlotFeed]) -> np.ndarray:
        """Feed every slot's rows, then sample a frame for each feed with params: int32 [n, K]."""
        rows = self._open()
        K = self.config.audio_num_codebooks
        if not feeds:
            return np.zeros((0, K), np.int32)
        st = rows.check(feeds)
        rows.record(st)
        hidden, order = [], []
        for group in (np.flatnonzero(st.lens == 1), np.flatnonzero(st.lens > 1)):
            if not group.size:
                continue
            group = group[np.argsort(st.slots[group])]
            plan, tokens, mask, attn, last = rows.plan(st, group)
            emb = self.model.embed_frames(tokens, mask)
            h = self.model.backbone_hidden(emb, rows.cache.views(plan), attn)  # [M, S, Db]
            pick = st.sampled[group]
            if pick.any():
                hidden.append(h.reshape(-1, h.shape[-1])[mx.array(last[pick].astype(np.int32))])
                order.append(group[pick])
        if not hidden:
            mx.eval(rows.cache.state)
            return np.zeros((0, K), np.int32)
        last_h = mx.concatenate(hidden) if len(hidden) > 1 else hidden[0]
        order = np.concatenate(order)
        if (np.diff(order) < 0).any():
            last_h = last_h[mx.array(np.argsort(order).astype(np.int32))]  # feed order
        codes = self._decode(last_h, st.params, rows.frame_keys(st))
        mx.eval(codes, rows.cache.state)
        rows.advance(st)
        return np.array(codes, dtype=np.int32)

    def _open(self) -> SlotRows:
        if self._slots is None:
            raise RuntimeError("no slots are open: call open_slots(n) first")
        return self._slots

    # ---- LogitsProbe ----
    def teacher_forced_logits(self, tokens: np.ndarray, mask: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """From empty caches: c0 logits [B, V] at the last position, depth logits [B, K-1, V] fed ``codes`` [B, K]."""
        tokens, mask = self._check(tokens, mask, probe=True)
        codes = check_probe_codes(codes, self.config, tokens.shape[0])
        self._new_caches(tokens.shape[0])  # from empty caches, never a kept prefix
        last_h = self._backbone(tokens, mask)
        c0 = self.model.c0_logits(last_h).astype(mx.float32)
        depth = self.model.depth_logits(last_h, mx.array(codes.astype(np.int32))).astype(mx.float32)
        mx.eval(c0, depth)
        out = np.array(c0), np.array(depth)
        self._new_caches(self.batch_size)
        return out
