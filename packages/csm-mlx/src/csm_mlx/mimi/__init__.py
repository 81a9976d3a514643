"""Mimi codec in MLX (spec/mimi.md), canonical Kyutai weight names, float32.

Same contract as csm-audio's numpy Mimi (csm_core.protocols.AudioCodec / StreamingDecoder), with the
exact causal window mask of the transformer (moshi_mlx has none; spec §8) and per-layer conv padding.
"""

from .codec import MlxMimi, MlxMimiBatchStreamingDecoder, MlxMimiStreamingDecoder

__all__ = ["MlxMimi", "MlxMimiStreamingDecoder", "MlxMimiBatchStreamingDecoder"]
