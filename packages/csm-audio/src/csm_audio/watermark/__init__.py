"""Offline audio watermark for generated speech: a keyed STFT patchwork mark (pure numpy).

`embed(audio, sample_rate, key, payload)` and `detect(audio, sample_rate, key)` carry a 32-bit
payload + CRC-16 under a rate-1/3 K=7 convolutional code (soft Viterbi), repeated every 1.024 s
block with keyed pilot cells for synchronisation (any crop >= 1.05 s can be searched; sample
offsets and block phases are tried). `PatchworkWatermarker` implements
`csm_core.protocols.Watermarker` with the defaults derived from the official CSM-1B public key
bytes [212, 211, 146, 56, 201]: key = those 5 bytes, payload = the first four, 0xD4D39238.

Design (details in patchwork.py / layout.py): 24 kHz STFT 1024/512, 121 adjacent-bin pairs in
0.3–6 kHz; per (2-frame slot, pair) cell one bin x(1+d), the other x(1-d). The mark is flat
across cells, capped at d <= 0.6, and scaled to a 25.2 dB watermark SNR. Detection uses
energy-weighted normalised pair differences, so silence does not count.

False positives: found requires a pilot z-score >= 5 and a CRC match, giving a bound of
192 · exp(-12.5) · 2^-16 ≈ 1.1e-8 per clip for audio independent of the key (see patchwork.py).

This is NOT SilentCipher: Sesame's SilentCipher detector (and the official verify step) will
not find this mark, and this detector does not find SilentCipher's. See spec/watermark.md §4.
"""

from csm_core.protocols import WatermarkResult

from .api import DEFAULT_KEY, DEFAULT_PARAMS, DEFAULT_PAYLOAD, PatchworkWatermarker, detect, embed
from .layout import CSM_PUBLIC_KEY, PatchworkParams
from .patchwork import false_positive_bound

__all__ = [
    "embed",
    "detect",
    "PatchworkWatermarker",
    "PatchworkParams",
    "WatermarkResult",
    "DEFAULT_KEY",
    "DEFAULT_PAYLOAD",
    "DEFAULT_PARAMS",
    "CSM_PUBLIC_KEY",
    "false_positive_bound",
]
