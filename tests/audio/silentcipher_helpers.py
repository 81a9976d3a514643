"""Shared pieces of the SilentCipher tests: test clips, random numpy networks, the oracle tool,
and a planted message decoder (the loudest of 5 fixed STFT bins names a frame's class) that
exercises the whole decoding path (phase-shift search, mode, rotation, bytes) at full size
without the cost of the real message decoder."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from csm_audio.watermark.silentcipher import CSM_1B_KEY, SilentCipher, SilentCipherConfig
from csm_audio.watermark.silentcipher.checkpoint import DEC_C_DIM, DEC_M_DIM, DEC_M_LAYERS, ENC_DIM, SilentCipherWeights
from csm_audio.watermark.silentcipher.model import key_symbols
from csm_audio.watermark.silentcipher.nets import GatedLayer

TOOL = Path(__file__).resolve().parents[2] / "tools" / "make_silentcipher_reference.py"
PLANTED_BINS = np.array([96, 136, 176, 216, 256])  # one per class, 1.0-2.8 kHz at 44.1 kHz / 4096
TINY = SilentCipherConfig(N_FFT=64, HOP_LENGTH=32, message_band_size=16)


def load_tool():
    spec = importlib.util.spec_from_file_location("make_silentcipher_reference", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def speechy(n: int, sr: int, seed: int = 0) -> np.ndarray:
    """A voiced-like test clip: harmonics with a moving pitch, syllable envelope, a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 12))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3.1 * t) ** 2
    return (0.1 * x * env + 0.003 * rng.standard_normal(n)).astype(np.float32)


def random_model(cfg: SilentCipherConfig = TINY, seed: int = 0) -> SilentCipher:
    """Random networks of the exact architecture, straight into numpy (no files)."""
    rng = np.random.default_rng(seed)

    def layer(cin, cout, k):
        s = 1 / np.sqrt(cin * k * k)
        w = lambda: rng.uniform(-s, s, (cout, cin, k, k)).astype(np.float32)  # noqa: E731
        b = lambda: rng.uniform(-s, s, cout).astype(np.float32)  # noqa: E731
        return GatedLayer.from_torch(w(), b(), w(), b(), rng.uniform(0.5, 1.5, cout), 0.2 * rng.standard_normal(cout))

    band, mdim = cfg.message_band_size, cfg.message_dim
    enc = [layer(1, ENC_DIM, 3)] + [layer(ENC_DIM, ENC_DIM, 3) for _ in range(cfg.enc_n_layers - 1)]
    dec_c = ([layer(3 * ENC_DIM, DEC_C_DIM, 3)] + [layer(DEC_C_DIM, DEC_C_DIM, 3) for _ in range(cfg.dec_c_n_layers - 2)]
             + [layer(DEC_C_DIM, 1, 1)])
    dec_m = ([layer(1, DEC_M_DIM, 3)] + [layer(DEC_M_DIM, DEC_M_DIM, 3) for _ in range(DEC_M_LAYERS - 2)]
             + [layer(DEC_M_DIM, mdim, 3)])
    msg_w = rng.standard_normal((band, mdim)).astype(np.float32)
    msg_b = rng.standard_normal(band).astype(np.float32)
    out_w = rng.standard_normal(band).astype(np.float32) / np.sqrt(band)
    w = SilentCipherWeights(enc, msg_w, msg_b, dec_c, dec_m, out_w, 0.1)
    return SilentCipher(cfg, w)


def planted_classes(model: SilentCipher):
    """A numpy message decoder: a frame's class is its loudest PLANTED_BINS bin."""
    return lambda y: np.argmax(model.stft.magnitude(y)[:, PLANTED_BINS], axis=1)


def planted_clip(seconds: float, key: bytes = CSM_1B_KEY, delay: int = 0, sr: int = 44100, seed: int = 0) -> np.ndarray:
    """44.1 kHz audio whose frame t (hop 2048) holds the tone of class (key classes)[t mod 21],
    delayed by `delay` samples, with a little noise."""
    classes = np.concatenate([key_symbols(key, SilentCipherConfig()) + 1, [0]])
    n = int(seconds * sr)
    idx = np.clip(np.round((np.arange(n) - delay) / 2048).astype(int), 0, None) % 21
    freq = PLANTED_BINS[classes[idx]] * sr / 4096
    x = 0.2 * np.sin(2 * np.pi * np.cumsum(freq) / sr)
    return (x + 0.002 * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)
