"""csm-core: what the CSM model is (configs, weights, protocols, generation), no compute kernels."""

from .config import CSMConfig, ConfigError, LlamaConfig, MimiConfig, csm_1b, csm_tiny, mimi, mimi_tiny
from .protocols import AudioCodec, FrameModel, SamplingParams, TextTokenizer, Watermarker, WatermarkResult
from .segment import Segment
from .options import GenerationOptions, OptionError
from .generation import Generation, GenerationStats, Generator, Request

__version__ = "0.1.0"

__all__ = [
    "CSMConfig",
    "ConfigError",
    "LlamaConfig",
    "MimiConfig",
    "csm_1b",
    "csm_tiny",
    "mimi",
    "mimi_tiny",
    "AudioCodec",
    "FrameModel",
    "SamplingParams",
    "TextTokenizer",
    "Watermarker",
    "WatermarkResult",
    "Segment",
    "Generator",
    "Generation",
    "GenerationStats",
    "Request",
    "GenerationOptions",
    "OptionError",
]
