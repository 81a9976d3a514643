"""Model configurations: Llama flavors, CSM and Mimi, with named presets.

Canonical rope parameters are the torchtune ones (old_context_len 8192, low 1, high 4);
Hugging Face's rescaled-but-equivalent form is normalised to them on read (spec/csm.md §4).
"""

from __future__ import annotations

import json
import math
import reprlib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = [
    "LlamaConfig",
    "CSMConfig",
    "MimiConfig",
    "FLAVORS",
    "csm_1b",
    "csm_tiny",
    "mimi",
    "mimi_tiny",
    "llama3_inv_freq",
    "ConfigError",
]


class ConfigError(ValueError):
    """A configuration file or value is not what the model needs."""


# Bounds on what a config may declare, so that a config.json from anywhere cannot make a loader
# loop or allocate without end (CSM-1B: 16 layers, 2048 wide, 8192 hidden, 128,256 text tokens).
MAX_LAYERS = 1024
MAX_WIDTH = 1 << 20  # heads, embedding and hidden sizes, codebook sizes
MAX_POSITIONS = 1 << 17  # Llama 3's longest context; CSM uses 2048
MAX_VOCAB = 1 << 24


def _check_ints(obj: object, bounds: Mapping[str, tuple[int, int]]) -> None:
    for name, (lo, hi) in bounds.items():
        v = getattr(obj, name)
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
            raise ConfigError(f"{type(obj).__name__}.{name} must be an integer in [{lo}, {hi}], got {reprlib.repr(v)}")


def _check_floats(obj: object, names: tuple[str, ...]) -> None:
    for name in names:
        v = getattr(obj, name)
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)) or not 0 < v < math.inf:
            raise ConfigError(f"{type(obj).__name__}.{name} must be a finite number > 0, got {reprlib.repr(v)}")


@dataclass(frozen=True)
class LlamaConfig:
    """One torchtune llama3_2 transformer (no embeddings, no output layer)."""

    num_layers: int
    num_heads: int
    num_kv_heads: int
    embed_dim: int
    intermediate_dim: int
    max_seq_len: int = 2048
    norm_eps: float = 1e-5
    rope_base: float = 500_000.0
    rope_scale_factor: float = 32.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_old_context_len: float = 8192.0

    def __post_init__(self) -> None:
        _check_ints(self, {"num_layers": (1, MAX_LAYERS), "num_heads": (1, MAX_WIDTH), "num_kv_heads": (1, MAX_WIDTH),
                           "embed_dim": (1, MAX_WIDTH), "intermediate_dim": (1, MAX_WIDTH),
                           "max_seq_len": (1, MAX_POSITIONS)})  # fmt: skip
        _check_floats(self, ("norm_eps", "rope_base", "rope_scale_factor", "rope_low_freq_factor",
                             "rope_high_freq_factor", "rope_old_context_len"))  # fmt: skip
        if self.rope_high_freq_factor <= self.rope_low_freq_factor:
            raise ConfigError(f"rope_high_freq_factor {self.rope_high_freq_factor} must exceed "
                              f"rope_low_freq_factor {self.rope_low_freq_factor}")  # fmt: skip
        if self.embed_dim % self.num_heads:
            raise ConfigError(f"embed_dim {self.embed_dim} is not a multiple of num_heads {self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}")
        if self.head_dim % 2:
            raise ConfigError(f"head_dim {self.head_dim} must be even for RoPE")

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    def inv_freq(self) -> np.ndarray:
        """Llama3-scaled RoPE inverse frequencies, float32 [head_dim/2]."""
        return llama3_inv_freq(
            self.head_dim,
            self.rope_base,
            self.rope_scale_factor,
            self.rope_low_freq_factor,
            self.rope_high_freq_factor,
            self.rope_old_context_len,
        )

    def layer_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes of one layer's tensors, keyed by canonical suffix."""
        d, hd, kv, ff = self.embed_dim, self.head_dim, self.kv_dim, self.intermediate_dim
        return {
            "attn.q_proj.weight": (self.num_heads * hd, d),
            "attn.k_proj.weight": (kv, d),
            "attn.v_proj.weight": (kv, d),
            "attn.output_proj.weight": (d, self.num_heads * hd),
            "mlp.w1.weight": (ff, d),  # gate
            "mlp.w2.weight": (d, ff),  # down
            "mlp.w3.weight": (ff, d),  # up
            "sa_norm.scale": (d,),
            "mlp_norm.scale": (d,),
        }


FLAVORS: dict[str, LlamaConfig] = {
    "llama-1B": LlamaConfig(num_layers=16, num_heads=32, num_kv_heads=8, embed_dim=2048, intermediate_dim=8192),
    "llama-100M": LlamaConfig(num_layers=4, num_heads=8, num_kv_heads=2, embed_dim=1024, intermediate_dim=8192),
    # Tiny flavors for tests: same structure (GQA groups, interleaved RoPE), small sizes.
    "tiny-backbone": LlamaConfig(num_layers=2, num_heads=4, num_kv_heads=2, embed_dim=64, intermediate_dim=128),
    "tiny-decoder": LlamaConfig(num_layers=2, num_heads=4, num_kv_heads=2, embed_dim=32, intermediate_dim=64),
}


def llama3_inv_freq(
    head_dim: int,
    base: float = 500_000.0,
    scale_factor: float = 32.0,
    low_freq_factor: float = 1.0,
    high_freq_factor: float = 4.0,
    old_context_len: float = 8192.0,
) -> np.ndarray:
    """torchtune Llama3ScaledRoPE frequencies (spec/csm.md §1), computed in float64, returned float32."""
    theta = 1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float64)[: head_dim // 2] / head_dim))
    theta = theta.astype(np.float32).astype(np.float64)  # torchtune builds theta in fp32
    low_wavelen = old_context_len / low_freq_factor
    high_wavelen = old_context_len / high_freq_factor
    out = np.empty_like(theta)
    for i, f in enumerate(theta):
        wavelen = 2 * math.pi / f
        if wavelen < high_wavelen:
            out[i] = f
        elif wavelen > low_wavelen:
            out[i] = f / scale_factor
        else:
            s = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
            out[i] = (1 - s) * f / scale_factor + s * f
    return out.astype(np.float32)


@dataclass(frozen=True)
class CSMConfig:
    """CSM: backbone + depth decoder flavors and vocabularies (original config.json fields)."""

    backbone_flavor: str = "llama-1B"
    decoder_flavor: str = "llama-100M"
    text_vocab_size: int = 128_256
    audio_vocab_size: int = 2051
    audio_num_codebooks: int = 32
    # Flavors not in FLAVORS (e.g. read from a Hugging Face config) are carried here.
    custom_flavors: Mapping[str, LlamaConfig] = field(default_factory=dict, hash=False, repr=False)

    def __post_init__(self) -> None:
        for name in (self.backbone_flavor, self.decoder_flavor):
            if not isinstance(name, str) or (name not in FLAVORS and name not in self.custom_flavors):
                raise ConfigError(f"unknown model flavor {reprlib.repr(name)}; known: {sorted(FLAVORS)}")
        _check_ints(self, {"text_vocab_size": (1, MAX_VOCAB), "audio_vocab_size": (1, MAX_WIDTH),
                           "audio_num_codebooks": (2, MAX_LAYERS)})  # fmt: skip

    @property
    def backbone(self) -> LlamaConfig:
        return self.custom_flavors.get(self.backbone_flavor) or FLAVORS[self.backbone_flavor]

    @property
    def decoder(self) -> LlamaConfig:
        return self.custom_flavors.get(self.decoder_flavor) or FLAVORS[self.decoder_flavor]

    # ---- canonical (original Sesame) tensor names and shapes ----
    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        b, d, K, V = self.backbone, self.decoder, self.audio_num_codebooks, self.audio_vocab_size
        shapes: dict[str, tuple[int, ...]] = {}
        for prefix, cfg in (("backbone", b), ("decoder", d)):
            for i in range(cfg.num_layers):
                for suffix, shape in cfg.layer_shapes().items():
                    shapes[f"{prefix}.layers.{i}.{suffix}"] = shape
            shapes[f"{prefix}.norm.scale"] = (cfg.embed_dim,)
        shapes["text_embeddings.weight"] = (self.text_vocab_size, b.embed_dim)
        shapes["audio_embeddings.weight"] = (V * K, b.embed_dim)
        shapes["projection.weight"] = (d.embed_dim, b.embed_dim)
        shapes["codebook0_head.weight"] = (V, b.embed_dim)
        shapes["audio_head"] = (K - 1, d.embed_dim, V)
        return shapes

    def num_parameters(self) -> int:
        return sum(math.prod(s) for s in self.weight_shapes().values())

    # ---- reading config.json (original or Hugging Face) ----
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "config") -> "CSMConfig":
        """From the fields of an original or Hugging Face config.json; ConfigError names what is wrong."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: a config must be a JSON object, got {type(data).__name__}")
        try:
            return cls._from_dict(data, source)
        except ConfigError as e:
            msg = str(e)
            raise ConfigError(msg if msg.startswith(source) else f"{source}: {msg}") from None
        except (TypeError, ValueError, OverflowError) as e:  # int("x"), int(None), int(inf), float([])
            raise ConfigError(f"{source}: bad config value ({type(e).__name__}: {str(e)[:200]})") from None

    @classmethod
    def _from_dict(cls, data: Mapping[str, Any], source: str) -> "CSMConfig":
        if "backbone_flavor" in data:
            missing = [k for k in ("decoder_flavor",) if k not in data]
            if missing:
                raise ConfigError(f"{source}: missing {missing}")
            return cls(
                backbone_flavor=data["backbone_flavor"],
                decoder_flavor=data["decoder_flavor"],
                text_vocab_size=int(data.get("text_vocab_size", 128_256)),
                audio_vocab_size=int(data.get("audio_vocab_size", 2051)),
                audio_num_codebooks=int(data.get("audio_num_codebooks", 32)),
            )
        if data.get("model_type") == "csm":
            return cls._from_hf(data, source)
        raise ConfigError(
            f"{source}: not a CSM config (expected 'backbone_flavor' of the original release "
            f"or 'model_type': 'csm' of Hugging Face; found keys {sorted(data)[:12]})"
        )

    @classmethod
    def from_json(cls, path: str | Path) -> "CSMConfig":
        path = Path(path)
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except OSError as e:
            raise ConfigError(f"{path}: cannot read it ({e})") from None
        except (ValueError, RecursionError) as e:  # bad UTF-8 or JSON, a 5000-digit number, nesting too deep
            raise ConfigError(f"{path}: not valid JSON ({type(e).__name__}: {e})") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def _from_hf(cls, data: Mapping[str, Any], source: str) -> "CSMConfig":
        depth = data.get("depth_decoder_config")
        if not isinstance(depth, Mapping):
            raise ConfigError(f"{source}: Hugging Face CSM config has no 'depth_decoder_config'")
        backbone = _llama_from_hf(data, f"{source}: backbone")
        decoder = _llama_from_hf(depth, f"{source}: depth_decoder_config")
        named = {v: k for k, v in FLAVORS.items()}
        custom: dict[str, LlamaConfig] = {}

        def flavor(cfg: LlamaConfig, fallback: str) -> str:
            if cfg in named:
                return named[cfg]
            custom[fallback] = cfg
            return fallback

        return cls(
            backbone_flavor=flavor(backbone, "hf-backbone"),
            decoder_flavor=flavor(decoder, "hf-decoder"),
            text_vocab_size=int(data.get("text_vocab_size", 128_256)),
            audio_vocab_size=int(data.get("vocab_size", 2051)),
            audio_num_codebooks=int(data.get("num_codebooks", 32)),
            custom_flavors=custom,
        )

    def to_dict(self) -> dict[str, Any]:
        """The original config.json fields."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "custom_flavors"}


def _llama_from_hf(d: Mapping[str, Any], where: str) -> LlamaConfig:
    if not isinstance(d, Mapping):
        raise ConfigError(f"{where}: expected an object, got {type(d).__name__}")
    try:
        heads = int(d["num_attention_heads"])
        hidden = int(d["hidden_size"])
        cfg: dict[str, Any] = dict(
            num_layers=int(d["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(d.get("num_key_value_heads", heads)),
            embed_dim=hidden,
            intermediate_dim=int(d["intermediate_size"]),
            norm_eps=float(d.get("rms_norm_eps", 1e-5)),
        )
    except KeyError as e:
        raise ConfigError(f"{where}: missing key {e.args[0]!r}") from None
    head_dim = d.get("head_dim")
    if head_dim is not None and int(head_dim) * heads != hidden:
        raise ConfigError(f"{where}: head_dim {head_dim} x {heads} heads != hidden_size {hidden}")
    # transformers 5.x: rope_parameters {rope_type, rope_theta, factor, ...}; 4.x: rope_theta + rope_scaling.
    rope = d.get("rope_parameters") or d.get("rope_scaling") or {}
    if not isinstance(rope, Mapping):
        raise ConfigError(f"{where}: rope_parameters must be an object, got {type(rope).__name__}")
    theta = rope.get("rope_theta", d.get("rope_theta", 500_000.0))
    cfg["rope_base"] = float(theta)
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type == "llama3":
        missing = [k for k in ("original_max_position_embeddings", "factor", "low_freq_factor", "high_freq_factor")
                   if k not in rope]  # fmt: skip
        if missing:
            raise ConfigError(f"{where}: llama3 rope_parameters lack {missing}")
        orig = float(rope["original_max_position_embeddings"])
        if not 0 < orig < math.inf:
            raise ConfigError(f"{where}: original_max_position_embeddings must be > 0, got {orig}")
        r = 8192.0 / orig  # rescale to torchtune's old_context_len; wavelength thresholds are unchanged
        cfg.update(
            rope_scale_factor=float(rope["factor"]),
            rope_low_freq_factor=float(rope["low_freq_factor"]) * r,
            rope_high_freq_factor=float(rope["high_freq_factor"]) * r,
            rope_old_context_len=8192.0,
        )
    elif rope_type == "default":
        # Plain RoPE = llama3 scaling that never triggers.
        cfg.update(rope_scale_factor=1.0, rope_low_freq_factor=1.0, rope_high_freq_factor=4.0)
    else:
        raise ConfigError(f"{where}: unsupported rope_type {reprlib.repr(rope_type)} (expected 'llama3' or 'default')")
    return LlamaConfig(**cfg)


def csm_1b() -> CSMConfig:
    """Sesame CSM-1B: llama-1B backbone + llama-100M depth decoder."""
    return CSMConfig()


def csm_tiny() -> CSMConfig:
    """A tiny CSM for tests: same structure, 32 codebooks, small dims."""
    return CSMConfig(backbone_flavor="tiny-backbone", decoder_flavor="tiny-decoder", text_vocab_size=128_256)


@dataclass(frozen=True)
class MimiConfig:
    """Kyutai Mimi codec (spec/mimi.md). Defaults are the released model."""

    sample_rate: int = 24_000
    frame_rate: float = 12.5
    channels: int = 1
    dimension: int = 512  # SEANet latent and transformer width
    n_filters: int = 64
    ratios: tuple[int, ...] = (8, 6, 5, 4)  # decoder order; the encoder reverses it
    kernel_size: int = 7
    last_kernel_size: int = 3
    residual_kernel_size: int = 3
    compress: int = 2
    num_transformer_layers: int = 8
    num_heads: int = 8
    dim_feedforward: int = 2048
    context: int = 250
    rope_max_period: float = 10_000.0
    norm_eps: float = 1e-5
    num_codebooks: int = 32  # 1 semantic + 31 acoustic
    num_semantic: int = 1
    codebook_size: int = 2048
    codebook_dim: int = 256

    def __post_init__(self) -> None:
        _check_ints(self, {"sample_rate": (1, 1 << 20), "channels": (1, 64), "dimension": (1, MAX_WIDTH),
                           "n_filters": (1, MAX_WIDTH), "kernel_size": (1, 1024), "last_kernel_size": (1, 1024),
                           "residual_kernel_size": (1, 1024), "compress": (1, 1024),
                           "num_transformer_layers": (0, MAX_LAYERS), "num_heads": (1, MAX_WIDTH),
                           "dim_feedforward": (1, MAX_WIDTH), "context": (1, MAX_WIDTH),
                           "num_codebooks": (1, MAX_LAYERS), "num_semantic": (0, MAX_LAYERS),
                           "codebook_size": (1, MAX_WIDTH), "codebook_dim": (1, MAX_WIDTH)})  # fmt: skip
        _check_floats(self, ("frame_rate", "rope_max_period", "norm_eps"))
        if not isinstance(self.ratios, tuple) or not 1 <= len(self.ratios) <= 16 or not all(
            isinstance(r, int) and not isinstance(r, bool) and 1 <= r <= 1024 for r in self.ratios
        ):
            raise ConfigError(f"MimiConfig.ratios must be 1 to 16 integers in [1, 1024], got {reprlib.repr(self.ratios)}")
        if self.dimension % self.num_heads:
            raise ConfigError(f"MimiConfig: dimension {self.dimension} is not a multiple of num_heads {self.num_heads}")
        if self.num_semantic > self.num_codebooks:
            raise ConfigError(f"MimiConfig: num_semantic {self.num_semantic} > num_codebooks {self.num_codebooks}")
        if not 1 <= self.sample_rate / self.frame_rate <= 1 << 20:
            raise ConfigError(f"MimiConfig: {self.sample_rate} Hz / {self.frame_rate} frames a second is no frame size")

    @property
    def hop_length(self) -> int:
        return math.prod(self.ratios)

    @property
    def frame_size(self) -> int:
        """Samples per code frame (1920 at 24 kHz / 12.5 Hz)."""
        return int(round(self.sample_rate / self.frame_rate))

    @property
    def downsample_stride(self) -> int:
        return self.frame_size // self.hop_length

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MimiConfig":
        known = {f.name for f in fields(cls)}
        try:
            kw = {k: (tuple(v) if k == "ratios" else v) for k, v in data.items() if k in known}
        except TypeError as e:
            raise ConfigError(f"MimiConfig.ratios must be a list of integers ({e})") from None
        return cls(**kw)


def mimi() -> MimiConfig:
    return MimiConfig()


def mimi_tiny() -> MimiConfig:
    """A small Mimi for fast tests: real strides (1920 samples a frame), small widths."""
    return MimiConfig(
        dimension=32,
        n_filters=4,
        num_transformer_layers=2,
        num_heads=2,
        dim_feedforward=64,
        codebook_dim=16,
    )
