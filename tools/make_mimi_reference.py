"""Oracle outputs for the numpy Mimi (spec/mimi.md §9), from transformers' MimiModel and moshi.

Random weights come from csm_core.testing.mimi.random_mimi_weights(config, seed), loaded into
- transformers `MimiModel` through the HF flat hub layout (renames + q/k permutation, written with
  `save_pretrained`-style files and read back by `from_pretrained`): the primary oracle. It pads
  every conv per layer like moshi 0.2.2, the version CSM pins, and applies the 250-step window.
- moshi (`loaders.get_mimi` construction with the same config), canonical Kyutai names with a strict
  load. moshi >= 0.2.6 pads the audio once to a multiple of 1920 instead of per layer (PR #258), so
  its encoder is compared only on lengths that are multiples of 1920; its decoder on all.

Usage:
    python tools/make_mimi_reference.py                      # writes tests/fixtures/mimi_tiny_oracle.npz
    python tools/make_mimi_reference.py --check-moshi        # also prints moshi-vs-HF agreement

The module is also imported by the slow parity tests (full-size models built on the fly).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from csm_core.config import MimiConfig, mimi_tiny
from csm_core.testing.mimi import mimi_test_audio, random_mimi_weights
from csm_core.weights import mimi_canonical_to_hf

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "mimi_tiny_oracle.npz"
SEED = 0
# name -> samples: not a multiple of 1920, a multiple, and longer than 250 transformer steps
CLIPS = {"short": 24_000, "exact": 24_960, "long": 252_000}
KS = (1, 8, 32)


def hf_config(config: MimiConfig):
    from transformers import MimiConfig as HFMimiConfig

    return HFMimiConfig(
        sampling_rate=config.sample_rate,
        audio_channels=config.channels,
        hidden_size=config.dimension,
        num_filters=config.n_filters,
        upsampling_ratios=list(config.ratios),
        kernel_size=config.kernel_size,
        last_kernel_size=config.last_kernel_size,
        residual_kernel_size=config.residual_kernel_size,
        compress=config.compress,
        codebook_size=config.codebook_size,
        codebook_dim=config.codebook_dim,
        vector_quantization_hidden_dimension=config.codebook_dim,
        num_quantizers=config.num_codebooks,
        num_semantic_quantizers=config.num_semantic,
        upsample_groups=config.dimension,
        num_hidden_layers=config.num_transformer_layers,
        intermediate_size=config.dim_feedforward,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        sliding_window=config.context,
        rope_parameters={"rope_type": "default", "rope_theta": config.rope_max_period},
        norm_eps=config.norm_eps,
    )


def hf_model(config: MimiConfig, weights: dict[str, np.ndarray]):
    """transformers MimiModel loaded from the flat `kyutai/mimi` layout via from_pretrained."""
    from safetensors.numpy import save_file
    from transformers import MimiModel

    with tempfile.TemporaryDirectory() as tmp:
        hf_config(config).save_pretrained(tmp)
        save_file({k: np.ascontiguousarray(v) for k, v in mimi_canonical_to_hf(weights, config).items()},
                  f"{tmp}/model.safetensors")
        model, info = MimiModel.from_pretrained(tmp, output_loading_info=True, torch_dtype=torch.float32)
    bad = {k: v for k, v in info.items() if v and k != "error_msgs"}
    if bad:
        raise RuntimeError(f"HF MimiModel load was not clean: {bad}")
    return model.eval()


def moshi_model(config: MimiConfig, weights: dict[str, np.ndarray]):
    """moshi MimiModel built like loaders.get_mimi, strict load of canonical names."""
    from moshi.models import loaders

    seanet = dict(loaders._seanet_kwargs, channels=config.channels, dimension=config.dimension,
                  n_filters=config.n_filters, ratios=list(config.ratios), kernel_size=config.kernel_size,
                  last_kernel_size=config.last_kernel_size, residual_kernel_size=config.residual_kernel_size,
                  compress=config.compress)
    quant = dict(loaders._quantizer_kwargs, dimension=config.codebook_dim, n_q=config.num_codebooks,
                 bins=config.codebook_size, input_dimension=config.dimension, output_dimension=config.dimension)
    tr = dict(loaders._transformer_kwargs, d_model=config.dimension, num_heads=config.num_heads,
              num_layers=config.num_transformer_layers, context=config.context, max_period=config.rope_max_period,
              dim_feedforward=config.dim_feedforward, input_dimension=config.dimension,
              output_dimensions=[config.dimension])
    cfg = dict(loaders._mimi_config, sample_rate=config.sample_rate, channels=config.channels,
               frame_rate=config.frame_rate, seanet=seanet, quantizer=quant, transformer=tr)
    model = loaders.get_mimi(None, cfg, num_codebooks=config.num_codebooks)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()}, strict=True)
    return model.eval()


def moshi_pads_per_layer() -> bool:
    """True for moshi <= 0.2.4 (CSM's 0.2.2), whose encoder matches HF on every length."""
    import moshi

    parts = tuple(int(p) for p in moshi.__version__.split(".")[:3])
    return parts < (0, 2, 6)


@torch.no_grad()
def hf_encode(model, audio: np.ndarray) -> dict[str, np.ndarray]:
    """Encoder intermediates [d, T25] / [d, T] and codes for each K."""
    x = torch.from_numpy(audio)[None, None]
    enc = model.encoder
    h = enc.encoder_seanet(x)
    t = enc.encoder_transformer(h.transpose(1, 2)).last_hidden_state.transpose(1, 2)
    z = enc.downsample(t)
    out = {"seanet": h[0].numpy(), "enc_transformer": t[0].numpy(), "latent": z[0].numpy()}
    for k in KS:
        out[f"codes{k}"] = model.quantizer.encode(z, k).transpose(0, 1)[0].numpy().astype(np.int64)
    return out


@torch.no_grad()
def hf_decode(model, codes: np.ndarray) -> dict[str, np.ndarray]:
    """codes [K, T] -> decoder transformer output [d, 2T] and audio [T·1920]."""
    z = model.quantizer.decode(torch.from_numpy(codes)[None])
    dec = model.decoder
    u = dec.upsample(z)
    t = dec.decoder_transformer(u.transpose(1, 2)).last_hidden_state.transpose(1, 2)
    audio = dec.decoder_seanet(t)
    return {"dec_transformer": t[0].numpy(), "decoded": audio[0, 0].numpy()}


@torch.no_grad()
def moshi_encode(model, audio: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    model.set_num_codebooks(k)
    x = torch.from_numpy(audio)[None, None]
    return model._encode_to_unquantized_latent(x)[0].numpy(), model.encode(x)[0].numpy()


@torch.no_grad()
def moshi_decode(model, codes: np.ndarray) -> np.ndarray:
    return model.decode(torch.from_numpy(codes)[None])[0, 0].numpy()


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def build_fixture(config: MimiConfig, seed: int, check_moshi: bool) -> dict[str, np.ndarray]:
    weights = random_mimi_weights(config, seed)
    hf = hf_model(config, weights)
    moshi = moshi_model(config, weights) if check_moshi else None
    out: dict[str, np.ndarray] = {"seed": np.int64(seed), "config_json": np.array(json.dumps(config.to_dict()))}
    for i, (name, length) in enumerate(CLIPS.items()):
        audio = mimi_test_audio(length, seed=100 + i)
        enc = hf_encode(hf, audio)
        out[f"audio_{name}"] = audio
        for key in ("seanet", "enc_transformer", "latent"):
            out[f"{key}_{name}"] = enc[key]
        for k in KS:
            out[f"codes{k}_{name}"] = enc[f"codes{k}"]
            if name == "long" and k != 32:
                continue  # keep the fixture small: the long clip decodes with all codebooks only
            dec = hf_decode(hf, enc[f"codes{k}"])
            out[f"decoded{k}_{name}"] = dec["decoded"]
            if k == 32:
                out[f"dec_transformer32_{name}"] = dec["dec_transformer"]
        if moshi is not None:
            report_moshi(moshi, name, audio, enc, out)
    return out


def report_moshi(moshi, name: str, audio: np.ndarray, enc: dict, out: dict) -> None:
    """Print moshi vs HF agreement; the encoder only where moshi pads like CSM's 0.2.2."""
    dec = moshi_decode(moshi, enc["codes32"])
    msg = f"  moshi vs HF [{name}]: decode rel-L2 {rel_l2(dec, out[f'decoded32_{name}']):.2e}"
    if moshi_pads_per_layer() or len(audio) % 1920 == 0:
        lat, codes = moshi_encode(moshi, audio, 32)
        msg += f", latent rel-L2 {rel_l2(lat, enc['latent']):.2e}, codes equal {np.mean(codes == enc['codes32']):.4f}"
    else:
        msg += " (encoder skipped: moshi >= 0.2.6 pads audio, not per layer)"
    print(msg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=FIXTURE)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--check-moshi", action="store_true", help="also compare moshi with HF and print agreement")
    args = ap.parse_args()
    torch.manual_seed(0)
    data = build_fixture(mimi_tiny(), args.seed, args.check_moshi)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **data)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, {len(data)} arrays)")


if __name__ == "__main__":
    main()
