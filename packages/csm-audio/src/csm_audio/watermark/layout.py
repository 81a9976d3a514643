"""Parameters of the keyed STFT patchwork mark and the keyed cell layout derived from a key.

Time-frequency grid at 24 kHz: STFT 1024 / hop 512 frames; a *slot* is 2 consecutive frames;
a *block* is 24 slots (48 frames, 1.024 s) and repeats for the whole clip. Frequency: adjacent
bin pairs (k, k+1) for even k in 0.3–6 kHz (121 pairs). A *cell* is (slot, pair); in a
cell one bin is scaled by (1 + d) and its neighbour by (1 - d), with the orientation set by the
key (and, for data cells, by one coded bit). Adjacent bins share the spectral tilt, so their
magnitude difference is a low-variance carrier.

The key fixes, per cell: a random sign, whether it is a sync (pilot) cell, and for data cells
which of the 162 coded bits it carries (a keyed interleaver spreading every bit over time and
frequency).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from .ecc import CODED_BITS

# The official CSM-1B SilentCipher key (public, "not secure" per the Sesame source).
CSM_PUBLIC_KEY = bytes([212, 211, 146, 56, 201])


@dataclass(frozen=True)
class PatchworkParams:
    """Every constant of the mark. The defaults are the tuned design; changing any of them makes
    a different (incompatible) mark. Fields after the detection block are derived."""

    sample_rate: int = 24000
    n_fft: int = 1024
    hop: int = 512
    f_lo: float = 300.0
    f_hi: float = 6000.0
    frames_per_slot: int = 2
    slots_per_block: int = 24
    sync_fraction: float = 0.25
    # Strength: the mark is flat (the same magnitude in every cell of the clip), capped at
    # delta_max of each pair's own magnitude; its level is set by the watermark-to-signal target.
    delta_max: float = 0.6
    target_snr_db: float = 25.2
    # Detection: sample-offset search step, the sync z-score threshold, and how many of the
    # best hypotheses above it are Viterbi-decoded.
    offset_step: int = 128
    sync_threshold: float = 5.0
    max_decodes: int = 6
    bins_a: tuple[int, ...] = field(init=False)  # lower bin of each pair
    bins_b: tuple[int, ...] = field(init=False)  # upper bin (bins_a + 1)

    def __post_init__(self) -> None:
        k_lo = int(np.ceil(self.f_lo * self.n_fft / self.sample_rate))
        k_hi = int(np.floor(self.f_hi * self.n_fft / self.sample_rate))
        a = tuple(range(k_lo + k_lo % 2, k_hi, 2))  # pairs start on even bins
        object.__setattr__(self, "bins_a", a)
        object.__setattr__(self, "bins_b", tuple(k + 1 for k in a))

    @property
    def n_pairs(self) -> int:
        return len(self.bins_a)

    @property
    def block_frames(self) -> int:
        return self.frames_per_slot * self.slots_per_block

    @property
    def n_offsets(self) -> int:
        return self.hop // self.offset_step

    @property
    def n_candidates(self) -> int:
        """Sync hypotheses tried per clip: sample offsets × frame phases within a block."""
        return self.n_offsets * self.block_frames

    @property
    def min_samples(self) -> int:
        """Shortest clip (at sample_rate) that covers one whole block of analysis frames."""
        return (self.block_frames - 1) * self.hop + self.n_fft


@dataclass(frozen=True)
class CellLayout:
    sign: np.ndarray  # float64 [S, P]: keyed ±1 per cell
    is_sync: np.ndarray  # bool [S, P]
    bit: np.ndarray  # int64 [S, P]: coded-bit index of data cells, -1 for sync cells


def key_bytes(key: bytes | bytearray | str | list[int] | tuple[int, ...]) -> bytes:
    """Normalise a key: bytes, a str (UTF-8) or a sequence of byte values."""
    if isinstance(key, (bytes, bytearray)):
        out = bytes(key)
    elif isinstance(key, str):
        out = key.encode("utf-8")
    elif isinstance(key, (list, tuple)) and all(isinstance(v, (int, np.integer)) and 0 <= v < 256 for v in key):
        out = bytes(int(v) for v in key)
    else:
        raise ValueError(f"watermark key must be bytes, str or a sequence of byte values, got {key!r}")
    if not out:
        raise ValueError("watermark key must not be empty")
    return out


def default_payload(key: bytes = CSM_PUBLIC_KEY) -> int:
    """The default 32-bit payload: the first four key bytes, big-endian (0xD4D39238 for CSM)."""
    return int.from_bytes(key[:4].ljust(4, b"\0"), "big")


@lru_cache(maxsize=16)
def cell_layout(key: bytes, params: PatchworkParams) -> CellLayout:
    seed = int.from_bytes(hashlib.sha256(b"csm-watermark/patchwork/v1/" + key).digest()[:16], "little")
    rng = np.random.default_rng(seed)
    shape = (params.slots_per_block, params.n_pairs)
    n_cells = shape[0] * shape[1]
    sign = rng.choice([-1.0, 1.0], size=n_cells)
    order = rng.permutation(n_cells)
    n_sync = int(round(params.sync_fraction * n_cells))
    is_sync = np.zeros(n_cells, dtype=bool)
    is_sync[order[:n_sync]] = True
    bit = np.full(n_cells, -1, dtype=np.int64)
    bit[order[n_sync:]] = np.arange(n_cells - n_sync) % CODED_BITS
    if n_cells - n_sync < CODED_BITS:
        raise ValueError(f"layout has {n_cells - n_sync} data cells, fewer than {CODED_BITS} coded bits")
    for a in (sign, is_sync, bit):
        a.setflags(write=False)
    return CellLayout(sign.reshape(shape), is_sync.reshape(shape), bit.reshape(shape))
