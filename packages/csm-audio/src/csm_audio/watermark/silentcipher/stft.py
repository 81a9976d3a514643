"""SilentCipher's STFT front end: pad to a whole window, centred Hann STFT, magnitude and phase,
and the matching inverse (what `torch.stft` / `torch.istft` with center=True compute).

Layout: spectrograms are [frames, bins] (time-major), the layout the gated convolutions use.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Stft"]


class Stft:
    """n_fft-point periodic Hann STFT with hop `hop`; the input is first zero-padded to the next
    multiple of n_fft (always at least one sample, a whole window when already a multiple)."""

    def __init__(self, n_fft: int, hop: int):
        self.n_fft, self.hop = int(n_fft), int(hop)
        if self.n_fft % self.hop or self.hop > self.n_fft // 2:
            raise ValueError(f"SilentCipher STFT: hop {hop} must divide n_fft {n_fft} and be at most n_fft/2")
        n = np.arange(self.n_fft)
        self.window = (0.5 - 0.5 * np.cos(2 * np.pi * n / self.n_fft)).astype(np.float64)

    def padded_length(self, n: int) -> int:
        return n + self.n_fft - n % self.n_fft

    def frames(self, n: int) -> int:
        """Frames for an n-sample input."""
        return self.padded_length(n) // self.hop + 1

    def _spectrum(self, x: np.ndarray) -> np.ndarray:
        """Complex [frames, n_fft/2 + 1] of x padded to a whole window, reflect-centred."""
        x = np.asarray(x, np.float32)
        x = np.pad(x, (0, self.n_fft - len(x) % self.n_fft))
        half = self.n_fft // 2
        x = np.pad(x, (half, half), mode="reflect").astype(np.float64)
        count = (len(x) - self.n_fft) // self.hop + 1
        frames = np.lib.stride_tricks.as_strided(x, (count, self.n_fft), (self.hop * 8, 8), writeable=False)
        return np.fft.rfft(frames * self.window, axis=1)

    def magnitude(self, x: np.ndarray) -> np.ndarray:
        """float32 [frames, bins] magnitude of x."""
        return np.abs(self._spectrum(x)).astype(np.float32)

    def transform(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float32 magnitude and phase (atan2), each [frames, bins]."""
        spec = self._spectrum(x)
        return np.abs(spec).astype(np.float32), np.arctan2(spec.imag, spec.real).astype(np.float32)

    def inverse(self, magnitude: np.ndarray, phase: np.ndarray, num_samples: int) -> np.ndarray:
        """Overlap-add inverse of [frames, bins] magnitude/phase, window-envelope normalised, the
        centring and the whole-window padding cut off: num_samples float32 samples."""
        mag = magnitude.astype(np.float64)
        ph = phase.astype(np.float64)
        frames = np.fft.irfft(mag * np.cos(ph) + 1j * (mag * np.sin(ph)), n=self.n_fft, axis=1) * self.window
        count = frames.shape[0]
        total = self.n_fft + self.hop * (count - 1)
        out = np.zeros(total)
        env = np.zeros(total)
        w2 = self.window**2
        # hop divides n_fft: add the frames in n_fft/hop interleaved groups, each a plain reshape
        per = self.n_fft // self.hop
        for g in range(per):
            sel = frames[g::per]
            start = g * self.hop
            seg = out[start : start + sel.size]
            seg += sel.reshape(-1)[: len(seg)]
            env_seg = env[start : start + sel.size]
            env_seg += np.tile(w2, len(sel))[: len(env_seg)]
        half = self.n_fft // 2
        out, env = out[half : total - half], env[half : total - half]
        if np.any(np.abs(env) < 1e-11):
            raise ValueError("SilentCipher iSTFT: window envelope has zeros (n_fft/hop violate the overlap-add condition)")
        return (out / env)[:num_samples].astype(np.float32)
