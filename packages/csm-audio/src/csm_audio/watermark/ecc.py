"""Channel code for the watermark payload: CRC-16 and a rate-1/3 convolutional code.

The 32-bit payload gets a CRC-16/CCITT-FALSE check appended (48 information bits), then the
K=7 code with generators (133, 171, 165) octal, terminated with 6 zero tail bits: 54 steps,
162 coded bits. Decoding is soft-decision Viterbi (maximum correlation), so cells that were
weak or erased simply contribute less.

The code is linear and the tail is zero, which the false-positive bound relies on: when the
soft inputs have random signs (unmarked audio under a random key), the decoded word is
uniform, so the CRC passes with probability exactly 2^-16.
"""

from __future__ import annotations

import numpy as np

PAYLOAD_BITS = 32
CRC_BITS = 16
INFO_BITS = PAYLOAD_BITS + CRC_BITS
CONSTRAINT = 7
GENERATORS = (0o133, 0o171, 0o165)
TAIL_BITS = CONSTRAINT - 1
CODED_BITS = (INFO_BITS + TAIL_BITS) * len(GENERATORS)  # 162

_N_STATES = 1 << (CONSTRAINT - 1)


def crc16(value: int, n_bits: int = PAYLOAD_BITS) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) of the n_bits of value, MSB first."""
    crc = 0xFFFF
    for i in range(n_bits - 1, -1, -1):
        bit = (value >> i) & 1
        top = (crc >> 15) & 1
        crc = (crc << 1) & 0xFFFF
        if top ^ bit:
            crc ^= 0x1021
    return crc


def payload_to_info_bits(payload: int) -> np.ndarray:
    """32-bit payload → 48 info bits (payload MSB first, then its CRC-16), uint8 [48]."""
    if not (isinstance(payload, (int, np.integer)) and 0 <= int(payload) < 1 << PAYLOAD_BITS):
        raise ValueError(f"payload must be an integer in [0, 2^32), got {payload!r}")
    word = (int(payload) << CRC_BITS) | crc16(int(payload))
    return np.array([(word >> i) & 1 for i in range(INFO_BITS - 1, -1, -1)], dtype=np.uint8)


def info_bits_to_payload(bits: np.ndarray) -> int | None:
    """48 decoded info bits → the payload if its CRC checks, else None."""
    word = 0
    for b in bits[:INFO_BITS]:
        word = (word << 1) | int(b)
    payload, crc = word >> CRC_BITS, word & 0xFFFF
    return payload if crc16(payload) == crc else None


def _parity(x: np.ndarray) -> np.ndarray:
    out = np.zeros_like(x)
    for i in range(CONSTRAINT):
        out ^= (x >> i) & 1
    return out


# Trellis. The shift register holds the newest bit in its MSB: reg = (bit << 6) | state,
# next state = reg >> 1. _OUT[state, bit] = the 3 output bits as ±1 (bit 0 → +1).
_states = np.arange(_N_STATES)
_reg = (np.arange(2)[None, :] << (CONSTRAINT - 1)) | _states[:, None]  # [64, 2]
_OUT = np.stack([1 - 2 * _parity(_reg & g) for g in GENERATORS], axis=-1).astype(np.float64)  # [64, 2, 3]
_NEXT = _reg >> 1  # [64, 2]
# Predecessors of each next state: (prev_state, bit) pairs; every state has exactly two.
_PREV = np.zeros((_N_STATES, 2), dtype=np.int64)
_PREV_BIT = np.zeros((_N_STATES,), dtype=np.int64)
for _s in range(_N_STATES):
    for _b in range(2):
        _n = _NEXT[_s, _b]
        _PREV[_n, _s & 1] = _s  # the two predecessors differ only in their lowest bit
        _PREV_BIT[_n] = _b  # the input bit is determined by the next state's MSB


def conv_encode(info_bits: np.ndarray) -> np.ndarray:
    """Info bits [n] → coded symbols ±1 float [3 (n + 6)] (bit 0 → +1, bit 1 → -1)."""
    bits = np.concatenate([np.asarray(info_bits, dtype=np.int64), np.zeros(TAIL_BITS, np.int64)])
    state, out = 0, []
    for b in bits:
        out.append(_OUT[state, b])
        state = _NEXT[state, b]
    return np.concatenate(out)


def viterbi_decode(soft: np.ndarray) -> np.ndarray:
    """Soft values [3 (n + 6)] (positive means bit 0) → maximum-correlation info bits [n].

    Starts and ends in state 0 (zero tail)."""
    steps = soft.reshape(-1, len(GENERATORS))  # [n + 6, 3]
    n_steps = steps.shape[0]
    metric = np.full(_N_STATES, -np.inf)
    metric[0] = 0.0
    choices = np.empty((n_steps, _N_STATES), dtype=np.int64)  # which predecessor won
    branch_all = _OUT @ steps.T  # [64, 2, n_steps] correlation of each branch with the step
    for t in range(n_steps):
        branch = branch_all[..., t]
        # candidate metric for (next state n, predecessor slot j)
        cand = metric[_PREV] + branch[_PREV, _PREV_BIT[:, None]]  # [64, 2]
        j = np.argmax(cand, axis=1)
        choices[t] = _PREV[_states, j]
        metric = cand[_states, j]
    state, bits = 0, np.empty(n_steps, dtype=np.uint8)
    for t in range(n_steps - 1, -1, -1):
        bits[t] = _PREV_BIT[state]
        state = choices[t, state]
    return bits[: n_steps - TAIL_BITS]
