"""Oracle outputs for CSM from Hugging Face transformers on seeded random weights.

Builds `CsmForConditionalGeneration` of a CSM config with the llama3 RoPE parameters passed
explicitly (CsmConfig() would silently default to plain RoPE, spec/csm.md §4), loads the canonical
random weights of `csm_core.testing.csm.random_csm_weights(config, seed)` into it (renamed and with
q/k rows permuted to HF's half-split RoPE here, independently of csm_core.weights), strictly, and
records what it computes on a two-segment prompt.

Regenerate the committed fixture (needs torch 2.13.0 and transformers 5.24.0, ~20 s):

    /work/venv/bin/python tools/make_reference.py            # -> tests/fixtures/csm_tiny_oracle.npz

Options:
    --seed N          weights seed (default 0; the prompt uses seed N + 1)
    --frames N        greedy frames to record (default 24)
    --out PATH        where to write the .npz (default tests/fixtures/csm_tiny_oracle.npz)
    --no-fixture      compute and check but write no .npz
    --full            CSM-1B dimensions (~13 GB RAM: run under `flock /work/bigmem.lock`)
    --export-dir DIR  also write the same random model as checkpoints:
                        DIR/original/{model.safetensors, config.json}   original Sesame layout
                        DIR/hf/  laid out like the sesame/csm-1b hub repo: config.json (original +
                             HF fields, rope in the older rope_scaling/rope_theta form),
                             transformers.safetensors.index.json + transformers-0000N-of-0000M
                             .safetensors (CSM + codec_model.*, both tied audio tables), and the
                             original-layout model.safetensors beside them.
                      The codec in the HF export is random (mimi_tiny() dimensions unless --full).

Fixture keys (all for batch 1):
    seed int, config_json str (CSMConfig.to_dict()), tokens int64 [1,S,33], mask bool [1,S,33],
    backbone_hidden f32 [1,S,Db] (after the final norm), c0_logits f32 [1,2051] (last position),
    tf_codes int32 [1,32] (= the first greedy frame), depth_logits f32 [1,31,2051] (decoder fed
    [h, c0..c30] of tf_codes), greedy_frames int32 [N,32] (HF generate, greedy backbone and decoder).

HF's EOS rule (`input_ids[:, -1, :-1] == 0`) looks at codebooks 0..30 only; the official rule
needs all 32 zero. With random weights neither fires in practice; the tool reports if one did.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REQUIRED = {"torch": "2.13.0", "transformers": "5.24.0"}
REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "tests" / "fixtures" / "csm_tiny_oracle.npz"


def check_versions() -> None:
    """Refuse to run on other oracle versions: the fixture documents exactly what produced it."""
    import torch
    import transformers

    found = {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__}
    bad = {k: v for k, v in found.items() if v != REQUIRED[k]}
    if bad:
        sys.exit(
            "make_reference.py: needs " + ", ".join(f"{k}=={v}" for k, v in REQUIRED.items())
            + "; found " + ", ".join(f"{k} {v}" for k, v in found.items())
        )


# ---- configs ----------------------------------------------------------------------------------

# Max positions of the hub config's rescaled llama3 form (spec/csm.md §4); same frequencies.
BACKBONE_ROPE_POSITIONS = 1024
DECODER_ROPE_POSITIONS = 16


def _rope(cfg, positions: int) -> dict:
    """llama3 rope parameters of a csm_core LlamaConfig in the converter's rescaled-but-equivalent
    form: old_context_len 8192 -> `positions`, low/high factors scaled alike, so the wavelength
    thresholds (8192, 2048) and the smoothing are unchanged. `check_rope` verifies the result."""
    r = positions / cfg.rope_old_context_len
    return {
        "rope_type": "llama3",
        "rope_theta": cfg.rope_base,
        "factor": cfg.rope_scale_factor,
        "low_freq_factor": cfg.rope_low_freq_factor * r,
        "high_freq_factor": cfg.rope_high_freq_factor * r,
        "original_max_position_embeddings": int(positions),
    }


def hf_codec_config(full: bool):
    """A random Mimi for `codec_model`: real dims with --full, else csm_core's mimi_tiny()."""
    from transformers import MimiConfig as HFMimiConfig

    from csm_core.config import mimi, mimi_tiny

    m = mimi() if full else mimi_tiny()
    return HFMimiConfig(
        hidden_size=m.dimension,
        num_filters=m.n_filters,
        upsampling_ratios=list(m.ratios),
        num_hidden_layers=m.num_transformer_layers,
        num_attention_heads=m.num_heads,
        num_key_value_heads=m.num_heads,
        intermediate_size=m.dim_feedforward,
        codebook_size=m.codebook_size,
        codebook_dim=m.codebook_dim,
        vector_quantization_hidden_dimension=m.codebook_dim,
        num_quantizers=m.num_codebooks,
        upsample_groups=m.dimension,
        sliding_window=m.context,
    )


def hf_config(config, full: bool = False):
    """transformers CsmConfig equivalent to a csm_core CSMConfig (explicit llama3 RoPE)."""
    from transformers import CsmConfig

    b, d = config.backbone, config.decoder
    depth = dict(
        num_codebooks=config.audio_num_codebooks,
        backbone_hidden_size=b.embed_dim,
        vocab_size=config.audio_vocab_size,
        hidden_size=d.embed_dim,
        intermediate_size=d.intermediate_dim,
        num_hidden_layers=d.num_layers,
        num_attention_heads=d.num_heads,
        num_key_value_heads=d.num_kv_heads,
        max_position_embeddings=config.audio_num_codebooks + 1,
        rms_norm_eps=d.norm_eps,
        rope_parameters=_rope(d, DECODER_ROPE_POSITIONS),
    )
    return CsmConfig(
        num_codebooks=config.audio_num_codebooks,
        vocab_size=config.audio_vocab_size,
        text_vocab_size=config.text_vocab_size,
        hidden_size=b.embed_dim,
        intermediate_size=b.intermediate_dim,
        num_hidden_layers=b.num_layers,
        num_attention_heads=b.num_heads,
        num_key_value_heads=b.num_kv_heads,
        max_position_embeddings=b.max_seq_len,
        rms_norm_eps=b.norm_eps,
        rope_parameters=_rope(b, BACKBONE_ROPE_POSITIONS),
        depth_decoder_config=depth,
        codec_config=hf_codec_config(full).to_dict(),
    )


# ---- canonical -> HF weights --------------------------------------------------------------------

def interleaved_to_half_split(w: np.ndarray, num_heads: int) -> np.ndarray:
    """q/k rows [H*d, D]: within each head, row 2i+p -> row p*d/2 + i (evens first, then odds)."""
    hd = w.shape[0] // num_heads
    return w.reshape(num_heads, hd // 2, 2, -1).transpose(0, 2, 1, 3).reshape(w.shape)


_LAYER_RENAMES = {
    "attn.q_proj.weight": "self_attn.q_proj.weight",
    "attn.k_proj.weight": "self_attn.k_proj.weight",
    "attn.v_proj.weight": "self_attn.v_proj.weight",
    "attn.output_proj.weight": "self_attn.o_proj.weight",
    "mlp.w1.weight": "mlp.gate_proj.weight",
    "mlp.w2.weight": "mlp.down_proj.weight",
    "mlp.w3.weight": "mlp.up_proj.weight",
    "sa_norm.scale": "input_layernorm.weight",
    "mlp_norm.scale": "post_attention_layernorm.weight",
}
_TOP_RENAMES = {
    "text_embeddings.weight": ["embed_text_tokens.weight"],
    # tied pair: the backbone's audio table is also the depth decoder's embedding
    "audio_embeddings.weight": [
        "backbone_model.embed_tokens.embed_audio_tokens.weight",
        "depth_decoder.model.embed_tokens.weight",
    ],
    "projection.weight": ["depth_decoder.model.inputs_embeds_projector.weight"],
    "codebook0_head.weight": ["lm_head.weight"],
    "audio_head": ["depth_decoder.codebooks_head.weight"],  # [K-1, Dd, V] both sides
    "backbone.norm.scale": ["backbone_model.norm.weight"],
    "decoder.norm.scale": ["depth_decoder.model.norm.weight"],
}


def canonical_to_hf(weights: dict[str, np.ndarray], config) -> dict[str, np.ndarray]:
    """Rename canonical (Sesame) tensors to HF CsmForConditionalGeneration names."""
    out: dict[str, np.ndarray] = {}
    for name, w in weights.items():
        if name in _TOP_RENAMES:
            for target in _TOP_RENAMES[name]:
                out[target] = w
            continue
        prefix, _, i, suffix = name.split(".", 3)  # e.g. backbone.layers.3.attn.q_proj.weight
        cfg = config.backbone if prefix == "backbone" else config.decoder
        hf_prefix = "backbone_model.layers" if prefix == "backbone" else "depth_decoder.model.layers"
        if suffix == "attn.q_proj.weight":
            w = interleaved_to_half_split(w, cfg.num_heads)
        elif suffix == "attn.k_proj.weight":
            w = interleaved_to_half_split(w, cfg.num_kv_heads)
        out[f"{hf_prefix}.{i}.{_LAYER_RENAMES[suffix]}"] = w
    return out


def build_model(config, weights: dict[str, np.ndarray], full: bool = False):
    """An fp32 eval-mode HF model holding `weights` (codec_model keeps its torch random init)."""
    import torch
    from transformers import CsmForConditionalGeneration

    torch.manual_seed(0)
    model = CsmForConditionalGeneration(hf_config(config, full)).eval().float()
    state = model.state_dict()
    mapped = canonical_to_hf(weights, config)
    csm_keys = {k for k in state if not k.startswith("codec_model.")}
    missing, extra = sorted(csm_keys - set(mapped)), sorted(set(mapped) - csm_keys)
    if missing or extra:
        raise KeyError(f"canonical -> HF mapping mismatch: missing {missing[:5]}, unexpected {extra[:5]}")
    for k, w in mapped.items():
        if tuple(state[k].shape) != w.shape:
            raise ValueError(f"{k}: HF shape {tuple(state[k].shape)} != mapped {w.shape}")
    full_state = {k: v for k, v in state.items() if k.startswith("codec_model.")}
    full_state.update({k: torch.from_numpy(np.ascontiguousarray(w)) for k, w in mapped.items()})
    model.load_state_dict(full_state, strict=True)
    del full_state, mapped
    check_rope(model, config)
    return model


def check_rope(model, config) -> None:
    """HF's llama3 inv_freq must equal csm_core's torchtune formula (else every logit drifts)."""
    for name, rot, cfg in (
        ("backbone", model.backbone_model.rotary_emb, config.backbone),
        ("depth decoder", model.depth_decoder.model.rotary_emb, config.decoder),
    ):
        hf = rot.inv_freq.detach().numpy()
        ours = cfg.inv_freq()
        if not np.allclose(hf, ours, rtol=1e-6, atol=0):
            raise AssertionError(f"{name}: HF inv_freq differs from LlamaConfig.inv_freq(): {hf} vs {ours}")


# ---- oracle outputs -----------------------------------------------------------------------------

def embed_frames(model, tokens: np.ndarray, mask: np.ndarray):
    """Σ over the 33 columns of (embedding ⊙ mask), with HF's own embedding tables: [B, S, Db]."""
    import torch

    K = model.config.num_codebooks
    t = torch.from_numpy(tokens)
    m = torch.from_numpy(mask).float()
    text = model.embed_text_tokens(t[..., K]) * m[..., K, None]
    audio_tokens = t[..., :K] + model.backbone_model.embed_tokens.audio_tokens_offsets
    audio = (model.backbone_model.embed_tokens.embed_audio_tokens(audio_tokens) * m[..., :K, None]).sum(2)
    return text + audio


def oracle_outputs(model, tokens: np.ndarray, mask: np.ndarray, n_frames: int) -> dict[str, np.ndarray]:
    import torch

    with torch.no_grad():
        emb = embed_frames(model, tokens, mask)
        out = model(inputs_embeds=emb, output_hidden_states=True, use_cache=False)
        hidden = out.hidden_states[-1]  # [1, S, Db], after the final norm (checked below)
        c0_logits = out.logits[:, -1, :]
        if not torch.allclose(model.lm_head(hidden[:, -1]), c0_logits, atol=1e-5):
            raise AssertionError("hidden_states[-1] is not the post-norm backbone output")

        attention = torch.ones(emb.shape[:2], dtype=torch.long)
        frames = model.generate(
            inputs_embeds=emb,
            attention_mask=attention,
            do_sample=False,
            depth_decoder_do_sample=False,
            max_new_tokens=n_frames,
        )
        frames = frames.reshape(-1, frames.shape[-1])  # [N, K]
        tf_codes = frames[:1]  # [1, K]

        dec_in = torch.nn.functional.pad(tf_codes[:, :-1], (1, 0), value=0)  # [0 placeholder, c0..c30]
        depth = model.depth_decoder(input_ids=dec_in, backbone_last_hidden_state=hidden[:, -1], use_cache=False)
        depth_logits = depth.logits  # [1, K-1, V]

    # Self-consistency: the greedy frame is the argmax of the logits recorded here.
    if int(c0_logits.argmax(-1)) != int(tf_codes[0, 0]):
        raise AssertionError("first greedy c0 != argmax(c0_logits)")
    if not torch.equal(depth_logits.argmax(-1)[0], tf_codes[0, 1:]):
        raise AssertionError("first greedy frame != argmax of teacher-forced depth logits")
    return {
        "backbone_hidden": hidden.numpy().astype(np.float32),
        "c0_logits": c0_logits.numpy().astype(np.float32),
        "tf_codes": tf_codes.numpy().astype(np.int32),
        "depth_logits": depth_logits.numpy().astype(np.float32),
        "greedy_frames": frames.numpy().astype(np.int32),
    }


def make_oracle(config, seed: int, n_frames: int = 24, full: bool = False, model=None) -> dict:
    """Everything the fixture holds, computed in-process (used by the tool and the live tests)."""
    from csm_core.testing.csm import make_prompt, random_csm_weights

    tokens, mask = make_prompt(config, np.random.default_rng(seed + 1))
    if model is None:
        model = build_model(config, random_csm_weights(config, seed), full=full)
    out = {
        "seed": np.int64(seed),
        "config_json": np.str_(json.dumps(config.to_dict())),
        "tokens": tokens,
        "mask": mask,
    }
    out.update(oracle_outputs(model, tokens, mask, n_frames))
    return out


def report(oracle: dict) -> None:
    frames = oracle["greedy_frames"]
    K = frames.shape[1]
    official_eos = np.flatnonzero((frames == 0).all(1))
    hf_eos = np.flatnonzero((frames[:, : K - 1] == 0).all(1))
    print(f"tokens {oracle['tokens'].shape}, hidden |max| {np.abs(oracle['backbone_hidden']).max():.3f}, "
          f"c0 logits |max| {np.abs(oracle['c0_logits']).max():.3f}")
    print(f"greedy frames {frames.shape}; max code {frames.max()} (must be < 2048); "
          f"EOS frames: official rule {official_eos.tolist()}, HF rule (codebooks 0..30) {hf_eos.tolist()}")
    print("first frame:", frames[0].tolist())
    if frames.max() >= 2048:
        raise AssertionError("an undecodable code (>= 2048) was chosen; the zeroed head rows should prevent it")


# ---- checkpoint export --------------------------------------------------------------------------

def export(dirpath: Path, config, weights: dict[str, np.ndarray], model, n_shards: int = 2) -> None:
    from safetensors.numpy import save_file

    dirpath = Path(dirpath)
    original = {k: np.ascontiguousarray(v) for k, v in weights.items()}
    (dirpath / "original").mkdir(parents=True, exist_ok=True)
    save_file(original, str(dirpath / "original" / "model.safetensors"))
    (dirpath / "original" / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")

    hf_dir = dirpath / "hf"
    hf_dir.mkdir(parents=True, exist_ok=True)
    save_file(original, str(hf_dir / "model.safetensors"))  # the hub repo keeps the original file too
    del original

    hf_cfg = model.config.to_dict()
    b, d = config.backbone, config.decoder
    # Older form as on the hub: rope_scaling + rope_theta, rescaled to small max positions.
    dd = dict(hf_cfg["depth_decoder_config"])
    for c, cfg, positions in ((hf_cfg, b, BACKBONE_ROPE_POSITIONS), (dd, d, DECODER_ROPE_POSITIONS)):
        c.pop("rope_parameters", None)
        c["rope_theta"] = cfg.rope_base
        c["rope_scaling"] = {k: v for k, v in _rope(cfg, positions).items() if k != "rope_theta"}
    hf_cfg["depth_decoder_config"] = dd
    hf_cfg.update(config.to_dict())  # the original fields sit beside the HF ones
    (hf_dir / "config.json").write_text(json.dumps(hf_cfg, indent=2, default=str) + "\n")

    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}  # both tied copies
    total = sum(v.nbytes for v in state.values())
    limit = total / n_shards
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for k in sorted(state):
        if size >= limit and len(shards) < n_shards:
            shards.append({})
            size = 0
        shards[-1][k] = np.ascontiguousarray(state[k])
        size += state[k].nbytes
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        fname = f"transformers-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(hf_dir / fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in shard})
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (hf_dir / "transformers.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    print(f"exported {dirpath}/original and {dirpath}/hf ({len(shards)} shards, {len(state)} HF tensors)")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--no-fixture", action="store_true")
    p.add_argument("--full", action="store_true", help="CSM-1B dimensions (run under flock /work/bigmem.lock)")
    p.add_argument("--export-dir", type=Path, default=None)
    args = p.parse_args(argv)
    check_versions()

    from csm_core.config import csm_1b, csm_tiny
    from csm_core.testing.csm import random_csm_weights

    config = csm_1b() if args.full else csm_tiny()
    t0 = time.perf_counter()
    weights = random_csm_weights(config, args.seed)
    model = build_model(config, weights, full=args.full)
    print(f"built HF model ({config.num_parameters():,} CSM params) in {time.perf_counter() - t0:.1f} s")
    oracle = make_oracle(config, args.seed, args.frames, full=args.full, model=model)
    report(oracle)
    if not args.no_fixture:
        out = args.out or (DEFAULT_OUT if not args.full else DEFAULT_OUT.with_name("csm_1b_oracle.npz"))
        out.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(out, **oracle)
        print(f"wrote {out} ({out.stat().st_size:,} bytes)")
    if args.export_dir:
        export(args.export_dir, config, weights, model)
    print(f"done in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
