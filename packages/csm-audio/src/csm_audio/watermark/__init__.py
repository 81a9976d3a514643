"""Offline audio watermark for generated speech: a keyed STFT patchwork mark (pure numpy).

`embed(audio, sample_rate, key, payload)` and `detect(audio, sample_rate, key)` carry a
32-bit payload + CRC-16 under a rate-1/3 convolutional code, repeated every 1.024 s block with
keyed pilots for synchronisation. `PatchworkWatermarker` implements
`csm_core.protocols.Watermarker` with the defaults derived from the official CSM-1B public key
bytes [212, 211, 146, 56, 201] (payload 0xD4D39238).

This is NOT SilentCipher: Sesame's SilentCipher detector will not find this mark, and this
detector does not find SilentCipher's. See shared/spec/watermark.md §4.
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
