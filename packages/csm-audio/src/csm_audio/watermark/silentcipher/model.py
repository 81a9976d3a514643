"""SilentCipher's encode and decode (the official `encode_wav` / `decode_wav` at the model's own
rate) over the numpy networks.

Message layout: a 5-byte key is 40 bits, read MSB first as 20 two-bit symbols; symbol s is class
s + 1 of message_dim = 5, and class 0 terminates: 21 classes, one per STFT frame, repeated
(frame t carries class t mod 21). The decoder takes the per-frame argmax, folds the frames into
rows of 21, takes each column's mode (smallest value on ties), rotates the row to just after its
first 0 and reads the symbols back as bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .checkpoint import SilentCipherConfig, SilentCipherWeights, load_config, load_weights
from .nets import fold_dec_c_input, run_stack
from .stft import Stft

__all__ = ["SilentCipher", "Decoded", "key_symbols", "AVERAGE_ENERGY", "PHASE_SHIFT_STEP"]

AVERAGE_ENERGY = 0.002837200844477648  # the power every clip is scaled to (VCTK's average)
PHASE_SHIFT_STEP = 10  # phase-shift decoding tries sample offsets 0, 10, ... < hop


def key_symbols(key: bytes, cfg: SilentCipherConfig) -> np.ndarray:
    """Key bytes -> the message_len - 1 two-bit symbols, MSB first."""
    bits = "".join(f"{b:08b}" for b in key)
    syms = np.array([int(bits[i : i + 2], 2) for i in range(0, len(bits) - 1, 2)], np.int64)
    if len(syms) != cfg.message_len - 1:
        raise ValueError(f"SilentCipher key: {len(key)} bytes give {len(syms)} symbols, the model carries "
                         f"{cfg.message_len - 1} ({cfg.key_bytes} bytes)")
    return syms


@dataclass
class Decoded:
    """decode_wav's answer. status False means no message could be read (reason says why)."""

    status: bool
    messages: list[list[int]] = field(default_factory=list)
    confidences: list[float] = field(default_factory=list)
    phase_shift: int = 0
    accuracy: float = 0.0  # row agreement at phase_shift (what phase-shift decoding maximises)
    offsets_tried: int = 0
    reason: str = ""


def _row_agreement(pred: np.ndarray) -> float:
    """Mean over columns of the share of rows agreeing with the column's most common value
    (the official check_accuracy, summed in the same order)."""
    acc = 0
    for i in range(pred.shape[1]):
        acc += np.bincount(pred[:, i]).max() / pred.shape[0]
    return acc / pred.shape[1]


def _bytes_from_symbols(values: list[int]) -> list[int]:
    """The official symbol -> byte conversion, including what it does with a stray class 0
    (symbol -1 formats as '-1'; a segment that is no longer base-2 raises ValueError)."""
    text = "".join(f"{v:02b}" for v in values)
    return [int(text[i * 8 : i * 8 + 8], 2) for i in range(len(text) // 8)]


class SilentCipher:
    """The 44.1 kHz SilentCipher model (or any config of the same architecture)."""

    def __init__(self, cfg: SilentCipherConfig, weights: SilentCipherWeights, source: str = ""):
        self.cfg, self.w, self.source = cfg, weights, source
        self.stft = Stft(cfg.N_FFT, cfg.HOP_LENGTH)
        # dec_c's input is [enc (32), carrier x32, message x32]: the 32 copies of one plane meet
        # the same input, so their weights are summed once here (96 -> 34 input channels).
        first = weights.dec_c[0]
        self._dec_c = [fold_dec_c_input(first)] + list(weights.dec_c[1:])

    @classmethod
    def load(cls, directory: str | Path) -> "SilentCipher":
        d = Path(directory)
        cfg = load_config(d / "hparams.yaml")
        return cls(cfg, load_weights(d, cfg), source=str(d))

    @property
    def sample_rate(self) -> int:
        return self.cfg.SR

    def min_samples(self) -> int:
        """Shortest input (at the model rate) whose STFT has message_len frames."""
        n_fft, hop, need = self.cfg.N_FFT, self.cfg.HOP_LENGTH, self.cfg.message_len
        windows = -(-((need - 1) * hop) // n_fft)  # padded length = windows * n_fft
        return (windows - 1) * n_fft

    # ---- encode ------------------------------------------------------------------------------
    def encode(self, y: np.ndarray, key: bytes, message_sdr: float | None = None) -> np.ndarray:
        """Mark y (float32 at the model rate); silent input comes back unchanged."""
        cfg = self.cfg
        sdr = cfg.message_sdr if message_sdr is None else float(message_sdr)
        syms = key_symbols(key, cfg)
        y = np.asarray(y, np.float32)
        power = np.mean(y**2)
        if power == 0:
            return y.copy()
        y = y * np.float32(np.sqrt(AVERAGE_ENERGY / power))
        carrier, phase = self.stft.transform(y)  # [T, F]
        t, f = carrier.shape
        enc = run_stack(carrier[:, :, None], self.w.enc)  # [T, F, 32]
        classes = np.concatenate([syms + 1, [0]])[np.arange(t) % cfg.message_len]
        msg = np.zeros((t, f), np.float32)
        msg[:, : cfg.message_band_size] = self.w.msg_w[:, classes].T + self.w.msg_b
        merged = np.concatenate([enc, carrier[:, :, None], msg[:, :, None]], axis=2)
        h = run_stack(merged, self._dec_c)[:, :, 0]  # [T, F]
        if cfg.ensure_negative_message:
            h = np.abs(h)
        h[:, cfg.message_band_size :] = 0.0
        if not cfg.no_normalization:
            h = h / np.sqrt(np.mean(h**2, axis=1, keepdims=True)) / np.float32(10 ** (sdr / 20))
        if cfg.frame_level_normalization:
            h = h * np.sqrt(np.mean(carrier**2, axis=1, keepdims=True))
        elif cfg.utterance_level_normalization:
            h = h * np.sqrt(np.mean(carrier**2))
        if cfg.ensure_negative_message:
            recon = np.maximum(carrier - h, 0.0)
        elif cfg.ensure_constrained_message:
            recon = carrier + np.clip(h, -carrier, carrier)
        else:
            recon = np.abs(h + carrier)
        out = self.stft.inverse(recon, phase, len(y))
        return (out * np.float32(np.sqrt(power / AVERAGE_ENERGY))).astype(np.float32)

    # ---- decode ------------------------------------------------------------------------------
    def _frame_classes(self, y: np.ndarray) -> np.ndarray:
        """dec_m's per-frame argmax for y (already power-normalised): int64 [T]."""
        band = self.cfg.message_band_size
        mag = self.stft.magnitude(y)[:, :band]
        h = run_stack(mag[:, :, None], self.w.dec_m)  # [T, band, message_dim]
        logits = np.einsum("tfc,f->tc", h, self.w.out_w) + np.float32(self.w.out_b)
        return np.argmax(logits, axis=1)

    def _rows(self, classes: np.ndarray) -> np.ndarray:
        n = self.cfg.message_len
        return classes[: len(classes) // n * n].reshape(-1, n)

    def decode(self, y: np.ndarray, phase_shift_decoding: bool = True) -> Decoded:
        """Read the message from y (float at the model rate), as the official decode_wav does.

        With phase_shift_decoding the sample offsets 0, 10, ... < hop are tried in order and the
        first with the highest row agreement wins; a perfect agreement (1.0) cannot be beaten,
        so the search stops there (the official code tries all 205 at 44.1 kHz)."""
        cfg = self.cfg
        y = np.asarray(y)
        n_min = self.min_samples()
        if len(y) < n_min:
            return Decoded(False, reason=f"clip too short: {len(y)} samples at {cfg.SR} Hz, need at least {n_min} "
                                         f"({cfg.message_len} STFT frames, one message)")
        power = np.mean(y**2)
        if not power > 0:
            return Decoded(False, reason="clip is silent")
        y = (y * np.sqrt(AVERAGE_ENERGY / power)).astype(np.float32)
        offsets = range(0, cfg.HOP_LENGTH, PHASE_SHIFT_STEP) if phase_shift_decoding else range(1)
        if len(y) - offsets[-1] < n_min:  # the official search fails on such a clip at its last offset
            return Decoded(False, reason=f"clip too short for phase-shift decoding: {len(y)} samples at {cfg.SR} Hz, "
                                         f"need at least {n_min + offsets[-1]}")
        best_ps, best_acc, best_rows, tried = 0, 0.0, None, 0
        for ps in offsets:
            rows = self._rows(self._frame_classes(y[ps:]))
            tried += 1
            acc = _row_agreement(rows) if phase_shift_decoding else 1.0
            if best_rows is None or acc > best_acc:
                best_ps, best_acc, best_rows = ps, acc, rows
            if acc == 1.0:
                break
        pred = best_rows
        mode = np.array([np.bincount(pred[:, i], minlength=cfg.message_dim).argmax() for i in range(pred.shape[1])])
        confidence = np.mean((pred == mode[None]).astype(np.float32)).item()
        zeros = np.nonzero(mode == 0)[0]
        if len(zeros) == 0:
            return Decoded(False, phase_shift=best_ps, accuracy=best_acc, offsets_tried=tried,
                           reason="no message terminator (class 0) among the decoded symbols")
        end = int(zeros.min())
        symbols = np.concatenate([mode[end + 1 :], mode[:end]]) - 1
        try:
            message = _bytes_from_symbols(symbols.tolist())
        except ValueError:
            return Decoded(False, phase_shift=best_ps, accuracy=best_acc, offsets_tried=tried,
                           reason="decoded symbols do not form bytes (a stray terminator)")
        return Decoded(True, [message], [confidence], best_ps, best_acc, tried)
