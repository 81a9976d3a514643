"""Fuzz targets: every parser of outside data, each with its contract and a seed corpus it makes.

The contract, checked for every input: the parser returns a valid object, or raises the
project's documented error type for that input with a message; any other exception type is a
`ContractViolation`. Hangs (a per-input time limit) and allocations beyond a bound are caught by
the driver (`fuzz.py`: libFuzzer -timeout and -rss_limit_mb, a tracemalloc peak per input) and by the property
tests (tests/fuzz, tracemalloc). Used by tools/fuzz/fuzz.py (atheris) and tests/fuzz (hypothesis).

A target's `parse(data, scratch)` writes the bytes where its parser reads them (a file in the
scratch directory, or memory) and checks what comes back; `seeds(scratch)` returns small valid
inputs {name: bytes}, made with the project's own writers and csm_core.testing.
"""

from __future__ import annotations

import io
import json
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["ContractViolation", "Target", "TARGETS", "check", "bounded_check", "micro_csm_config"]

MAX_INPUT = 1 << 16  # bytes of one fuzz input; the seeds stay below it
MAX_ALLOC = 512 << 20  # peak traced bytes (Python objects, numpy arrays) while parsing one input


class ContractViolation(AssertionError):
    """A parser broke the contract: an undocumented exception type, or an error with no message."""


@dataclass(frozen=True)
class Target:
    name: str
    parse: Callable[[bytes, Path], Any]
    errors: Callable[[], tuple[type[BaseException], ...]]  # the documented error types (imported lazily)
    seeds: Callable[[Path], dict[str, bytes]]
    about: str


def check(target: Target, data: bytes, scratch: Path) -> str:
    """Run one input through a target: 'ok' (a valid object) or 'refused' (a documented error);
    anything else raises ContractViolation (chained to the original exception)."""
    allowed = target.errors()
    try:
        target.parse(data, scratch)
    except allowed as e:
        if not str(e).strip():
            raise ContractViolation(f"{target.name}: {type(e).__name__} without a message") from e
        return "refused"
    except ContractViolation:
        raise
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # noqa: BLE001 - the point: any other type (a Rust PanicException too) breaks it
        raise ContractViolation(f"{target.name}: {type(e).__name__}: {str(e)[:300]}") from e
    return "ok"


def bounded_check(target: Target, data: bytes, scratch: Path) -> str:
    """check() plus the allocation bound: at most MAX_ALLOC bytes at peak, as tracemalloc (which
    numpy reports its arrays to) sees them; started here if it is not tracing yet."""
    if not tracemalloc.is_tracing():
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    result = check(target, data, scratch)
    peak = tracemalloc.get_traced_memory()[1] - base
    if peak > MAX_ALLOC:
        try:
            raise MemoryError(f"{peak} bytes allocated for a {len(data)}-byte input (bound {MAX_ALLOC})")
        except MemoryError as e:
            raise ContractViolation(f"{target.name}: allocation beyond the bound") from e
    return result


def _write(scratch: Path, name: str, data: bytes) -> Path:
    path = scratch / name
    path.write_bytes(data)
    return path


def _expect(cond: bool, what: str) -> None:
    if not cond:
        raise ContractViolation(what)


# ---------------------------------------------------------------- tiny models for the seeds
def micro_csm_config():
    """A CSM small enough that a whole quantized GGUF fits a fuzz input (every row 32 values)."""
    from csm_core.config import CSMConfig, LlamaConfig

    flavor = LlamaConfig(num_layers=1, num_heads=2, num_kv_heads=1, embed_dim=32, intermediate_dim=32, max_seq_len=16)
    return CSMConfig(backbone_flavor="micro", decoder_flavor="micro", text_vocab_size=8, audio_vocab_size=4,
                     audio_num_codebooks=2, custom_flavors={"micro": flavor})  # fmt: skip


def _micro_weights(seed: int = 0) -> dict[str, np.ndarray]:
    from csm_core.testing.csm import random_csm_weights

    return random_csm_weights(micro_csm_config(), seed)


# ---------------------------------------------------------------- safetensors
def _safetensors_errors():
    from csm_core.weights import CheckpointError

    return (CheckpointError,)


def _parse_safetensors(data: bytes, scratch: Path) -> None:
    from csm_core.weights import read_safetensors, read_safetensors_header
    from csm_core.weights.dtypes import SAFETENSORS_DTYPES

    path = _write(scratch, "model.safetensors", data)
    entries, _, _ = read_safetensors_header(path)
    for mmap in (True, False):
        tensors, meta = read_safetensors(path, mmap=mmap)
        _expect(set(tensors) == set(entries), "tensor names differ from the header's")
        _expect(all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()), "metadata not str->str")
        for name, a in tensors.items():
            _expect(a.shape == entries[name]["shape"] and a.dtype in SAFETENSORS_DTYPES.values(), f"{name}: bad array")
            a.tobytes()  # every byte readable


def _seed_safetensors(scratch: Path) -> dict[str, bytes]:
    import ml_dtypes

    from csm_core.weights import save_safetensors

    rng = np.random.default_rng(0)
    sets = {
        "mixed": {"w": rng.standard_normal((4, 8), np.float32), "b": np.arange(5, dtype=np.int64),
                  "h": rng.standard_normal(3).astype(ml_dtypes.bfloat16), "s": np.float32(2.5).reshape(()),
                  "e": np.zeros((0, 3), np.float16), "m": np.array([True, False])},  # fmt: skip
        "micro_csm": _micro_weights(),
    }
    out = {}
    for name, tensors in sets.items():
        path = scratch / f"{name}.safetensors"
        save_safetensors(path, tensors, {"format": "np"} if name == "mixed" else None)
        out[name] = path.read_bytes()
    return out


# ---------------------------------------------------------------- torch .pt
def _parse_torch_pt(data: bytes, scratch: Path) -> None:
    from csm_core.weights import read_torch_checkpoint

    path = _write(scratch, "ckpt.pt", data)
    tensors = read_torch_checkpoint(path)
    _expect(isinstance(tensors, dict) and bool(tensors), "not a non-empty dict")
    for name, a in tensors.items():
        _expect(isinstance(name, str) and isinstance(a, np.ndarray), f"{name!r}: not a named array")
        a.tobytes()


def _seed_torch_pt(scratch: Path) -> dict[str, bytes]:
    try:
        import torch
    except ImportError:  # the seeds need torch.save; the parser under test never imports torch
        return {}
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4, 6, generator=g)
    sets = {
        "plain": {"w": w, "b": torch.arange(3), "h": torch.randn(5, generator=g).bfloat16(), "t": w.t()},
        "nested": {"model": {"x": torch.randn(2, 3, generator=g).half(), "y": torch.ones(2, dtype=torch.bool)},
                   "epoch": 3},  # fmt: skip
        "micro_csm": {k: torch.from_numpy(v.copy()) for k, v in _micro_weights().items()},
    }
    out = {}
    for name, obj in sets.items():
        buf = io.BytesIO()
        torch.save(obj, buf)
        out[name] = buf.getvalue()
    return out


# ---------------------------------------------------------------- GGUF
def _gguf_errors():
    from csm_cpu.weights import WeightError

    return (WeightError,)


def _parse_gguf(data: bytes, scratch: Path) -> None:
    from csm_core.config import CSMConfig
    from csm_cpu.gguf_io import read_gguf
    from csm_cpu.quant import QTensor

    path = _write(scratch, "model.gguf", data)
    config, quant, weights = read_gguf(path)
    _expect(isinstance(config, CSMConfig) and isinstance(quant, str), "bad config/quant")
    for name, t in weights.items():
        _expect(isinstance(t, (QTensor, np.ndarray)), f"{name}: {type(t).__name__}")
        (t.data if isinstance(t, QTensor) else t).tobytes()


def _seed_gguf(scratch: Path) -> dict[str, bytes]:
    from csm_cpu.gguf_io import write_gguf

    cfg, w = micro_csm_config(), _micro_weights()
    out = {}
    for quant in ("f32", "bf16", "q8_0", "q4_0"):
        path = write_gguf(scratch / f"micro_{quant}.gguf", cfg, w, quant)
        out[f"micro_{quant}"] = path.read_bytes()
    return out


# ---------------------------------------------------------------- config.json
def _config_errors():
    from csm_core.config import ConfigError
    from csm_core.weights import CheckpointError

    return (ConfigError, CheckpointError)


def _parse_config(data: bytes, scratch: Path) -> None:
    from csm_core.config import CSMConfig, ConfigError, MimiConfig
    from csm_core.weights import mimi_config_beside

    path = _write(scratch, "config.json", data)
    mimi = mimi_config_beside(path)
    if mimi is not None:
        _expect(isinstance(mimi, MimiConfig), "not a MimiConfig")
        mimi.frame_size, mimi.hop_length  # noqa: B018 - derived values must compute
    try:
        cfg = CSMConfig.from_json(path)
    except ConfigError:
        if mimi is not None:
            return  # a Mimi config.json is no CSM config
        raise
    _expect(cfg.num_parameters() >= 0, "negative size")
    cfg.backbone.inv_freq()
    cfg.decoder.inv_freq()


def _seed_config(scratch: Path) -> dict[str, bytes]:
    from csm_core.config import csm_1b, csm_tiny

    hf_llama = {"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_size": 64,
                "intermediate_size": 128, "rms_norm_eps": 1e-5, "head_dim": 16,
                "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                                    "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                    "original_max_position_embeddings": 8192}}  # fmt: skip
    hf_mimi = {"model_type": "mimi", "hidden_size": 32, "num_attention_heads": 2, "head_dim": 16,
               "num_key_value_heads": 2, "codebook_dim": 16, "vector_quantization_hidden_dimension": 16,
               "upsample_groups": 32, "sampling_rate": 24000, "num_filters": 4, "upsampling_ratios": [8, 6, 5, 4],
               "num_hidden_layers": 2, "intermediate_size": 64, "sliding_window": 250, "num_quantizers": 32,
               "codebook_size": 2048, "frame_rate": 12.5, "rope_theta": 10000.0}  # fmt: skip
    hf_csm = {"model_type": "csm", **hf_llama, "vocab_size": 2051, "text_vocab_size": 128256, "num_codebooks": 32,
              "depth_decoder_config": {**hf_llama, "hidden_size": 32, "head_dim": 8, "intermediate_size": 64},
              "codec_config": hf_mimi}  # fmt: skip
    docs = {"original": csm_1b().to_dict(), "tiny": csm_tiny().to_dict(), "hf_csm": hf_csm, "hf_mimi": hf_mimi,
            "hf_csm_default_rope": {**hf_csm, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}}}  # fmt: skip
    return {k: json.dumps(v, indent=1).encode() for k, v in docs.items()}


# ---------------------------------------------------------------- tokenizers
def _tokenizer_errors():
    from csm_tokenizers import TokenizerFileError

    return (TokenizerFileError,)


def _exercise_tokenizer(tok) -> None:
    text = "Hello wörld, 123 ok?\n\t<|end_of_text|> ✓"
    ids = tok.encode(text, bos=tok.bos_id >= 0, eos=tok.eos_id >= 0)
    _expect(all(isinstance(i, int) and 0 <= i < tok.vocab_size for i in ids), "ids out of range")
    tok.decode([i for i in ids if not tok.is_special(i)])


def _parse_tokenizer_json(data: bytes, scratch: Path) -> None:
    from csm_tokenizers import load_hf_tokenizer_json

    _exercise_tokenizer(load_hf_tokenizer_json(_write(scratch, "tokenizer.json", data)))


def micro_bpe_vocab() -> dict[bytes, int]:
    """A byte-level BPE: the 256 bytes, then a few merged tokens (id order = merge order)."""
    ranks = {bytes([b]): b for b in range(256)}
    for tok in (b"he", b"ll", b"hell", b"hello", b" w", b"or", b" wor", b"ld", b" world", b"in", b"ing", b"\xc3\xb6"):
        ranks[tok] = len(ranks)
    return ranks


def _hf_json_spec(ranks: dict[bytes, int]) -> dict:
    from csm_tokenizers.hf_json import bytes_to_unicode
    from csm_tokenizers.llama3 import LLAMA3_PATTERN

    alpha = bytes_to_unicode()
    s = {tok: "".join(alpha[b] for b in tok) for tok in ranks}
    vocab = {s[t]: i for t, i in ranks.items()}
    merges = sorted(
        (vocab[s[t]], len(s[t][:i]), s[t[:i]], s[t[i:]]) for t in ranks for i in range(1, len(t))
        if t[:i] in ranks and t[i:] in ranks
    )  # fmt: skip
    n = len(ranks)
    return {
        "version": "1.0", "normalizer": None,
        "added_tokens": [{"id": n, "content": "<|begin_of_text|>", "special": True},
                         {"id": n + 1, "content": "<|end_of_text|>", "special": True}],
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_PATTERN}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  "vocab": vocab, "merges": [[a, b] for *_, a, b in merges]},
    }  # fmt: skip


def _seed_tokenizer_json(scratch: Path) -> dict[str, bytes]:
    spec = _hf_json_spec(micro_bpe_vocab())
    legacy = json.loads(json.dumps(spec))
    legacy["model"]["merges"] = [" ".join(m) for m in legacy["model"]["merges"]]
    return {"micro": json.dumps(spec, ensure_ascii=False).encode(), "legacy_merges": json.dumps(legacy).encode()}


def _parse_tokenizer_model(data: bytes, scratch: Path) -> None:
    """Meta's tiktoken rank file or a SentencePiece model, told apart as load_tokenizer does.
    Ranks of any size are read (load_tokenizer wants exactly Llama 3's 128,000)."""
    from csm_tokenizers import BytePairTokenizer, SentencePieceTokenizer, detect_format
    from csm_tokenizers.hf_json import load_hf_tokenizer_json
    from csm_tokenizers.llama3 import LLAMA3_PATTERN, llama3_special_tokens, read_tiktoken_ranks

    path = _write(scratch, "tokenizer.model", data)
    kind = detect_format(path)
    if kind == "tiktoken":
        ranks = read_tiktoken_ranks(path)
        specials = llama3_special_tokens(len(ranks))
        tok = BytePairTokenizer("t", ranks, specials, LLAMA3_PATTERN, bos_token="<|begin_of_text|>",
                                eos_token="<|end_of_text|>", source=str(path))  # fmt: skip
    elif kind == "sentencepiece":
        tok = SentencePieceTokenizer(path)
    else:
        tok = load_hf_tokenizer_json(path)
    _exercise_tokenizer(tok)


def _seed_tokenizer_model(scratch: Path) -> dict[str, bytes]:
    import base64

    ranks = micro_bpe_vocab()
    out = {"tiktoken": b"".join(base64.b64encode(t) + b" %d\n" % i for t, i in ranks.items())}
    try:
        import sentencepiece as spm
    except ImportError:
        return out
    text = ["Hello world, this is a tiny corpus.", "Speech models read text; tokens are pieces of it.",
            "The quick brown fox jumps over the lazy dog.", "Zwölf Boxkämpfer jagen Viktor quer über den Sylter Deich."]  # fmt: skip
    for kind in ("bpe", "unigram"):
        buf = io.BytesIO()
        spm.SentencePieceTrainer.train(sentence_iterator=iter(text * 4), model_writer=buf, model_type=kind,
                                       vocab_size=320, byte_fallback=True, normalization_rule_name="identity", hard_vocab_limit=False,
                                       minloglevel=2)  # fmt: skip
        out[f"sentencepiece_{kind}"] = buf.getvalue()
    return out


# ---------------------------------------------------------------- audio
def _audio_errors():
    from csm_audio.io import AudioFileError

    return (AudioFileError,)


def _parse_audio(data: bytes, scratch: Path) -> None:
    from csm_audio.io import load_audio, read_audio

    audio, rate = read_audio(data)
    _expect(audio.dtype == np.float32 and audio.ndim == 2 and rate > 0, "bad decode")
    mono = load_audio(data)
    _expect(mono.dtype == np.float32 and mono.ndim == 1 and np.isfinite(mono).all(), "bad 24 kHz audio")


def _seed_audio(scratch: Path) -> dict[str, bytes]:
    from csm_audio.io import encode_audio
    from csm_core.testing.mimi import mimi_test_audio

    clip = mimi_test_audio(2400, seed=0, sample_rate=24000) * 0.5  # 0.1 s
    out = {}
    for fmt, subtype, rate in (("wav", None, 24000), ("wav", "FLOAT", 16000), ("flac", None, 22050),
                               ("ogg", None, 24000), ("mp3", None, 24000), ("opus", None, 24000)):  # fmt: skip
        try:
            out[f"{fmt}_{subtype or 'default'}_{rate}"] = encode_audio(clip[: rate // 10], rate, fmt, subtype)
        except Exception:  # noqa: BLE001 - a libsndfile without this codec: fewer seeds
            pass
    stereo = np.stack([clip, -clip], axis=1)
    out["wav_stereo"] = encode_audio(stereo, 24000, "wav")
    return out


# ---------------------------------------------------------------- request files (csm batch, contexts)
def _input_errors():
    from csm_app.inputs import InputError
    from csm_audio.io import AudioFileError

    return (InputError, AudioFileError)


def _scratch_files(scratch: Path) -> None:
    """A context file and a clip beside the request file, so relative names in inputs resolve."""
    from csm_audio.io import write_audio

    if not (scratch / "a.wav").exists():
        write_audio(scratch / "a.wav", np.zeros(240, np.float32), 24000)
        (scratch / "voice.jsonl").write_text('{"speaker": 1, "text": "hi", "audio": "a.wav"}\n')


def _parse_batch(data: bytes, scratch: Path) -> None:
    from csm_app.audio_io import FORMATS
    from csm_app.corpus import read_rows
    from csm_core import GenerationOptions

    _scratch_files(scratch)
    path = _write(scratch, "requests.jsonl", data)
    rows = read_rows(path, "wav", FORMATS, GenerationOptions())
    _expect(bool(rows) and all(isinstance(r.text, str) and r.options.seed is not None for r in rows), "bad batch rows")


def _parse_context(data: bytes, scratch: Path) -> None:
    from csm_app.audio_io import read_context_audio
    from csm_app.inputs import context_segments, read_context

    _scratch_files(scratch)
    turns = read_context(_write(scratch, "context.jsonl", data))
    segments = context_segments(turns, read_context_audio)
    _expect(all(s.speaker >= 0 for s in segments), "negative speaker")


def _seed_batch(scratch: Path) -> dict[str, bytes]:
    lines = [{"text": "Hello there."}, {"text": "Second one.", "speaker": 2, "output": "two.flac", "seed": 3},
             {"text": "With a voice.", "voice": "voice.jsonl", "id": "v1", "temperature": 0.5},
             {"text": "Inline.", "context": [{"speaker": 0, "text": "hi", "audio": "a.wav"}], "topk": 20}]  # fmt: skip
    return {"batch": "\n".join(json.dumps(x) for x in lines).encode() + b"\n\n"}


def _seed_context(scratch: Path) -> dict[str, bytes]:
    lines = [{"speaker": 0, "text": "hi", "audio": "a.wav"}, {"speaker": 1, "text": "no audio here"}]
    return {"context": "\n".join(json.dumps(x) for x in lines).encode()}


# ---------------------------------------------------------------- Mimi codes (.npy)
def _codes_errors():
    from csm_app.inputs import InputError

    return (InputError,)


_MIMI = None


def _tiny_mimi():
    global _MIMI
    if _MIMI is None:
        from csm_audio.mimi.model import Mimi
        from csm_core.config import mimi_tiny
        from csm_core.testing.mimi import random_mimi_weights

        cfg = mimi_tiny()
        _MIMI = Mimi(cfg, random_mimi_weights(cfg, 0))
    return _MIMI


def _parse_codes(data: bytes, scratch: Path) -> None:
    from csm_app.inputs import read_codes

    codes = read_codes(_write(scratch, "codes.npy", data))
    _expect(codes.dtype == np.int64 and codes.ndim == 2, "bad codes array")
    if codes.shape[1] <= 4:  # decoding is the codec's boundary (ValueError for codes it cannot take)
        try:
            audio = _tiny_mimi().decode(codes)
        except ValueError as e:
            _expect(bool(str(e)), "codec error without a message")
        else:
            _expect(audio.shape == (codes.shape[1] * 1920,), "wrong audio length")


def _seed_codes(scratch: Path) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    out = {}
    for name, a in (("k32_t3", rng.integers(0, 2048, (32, 3)).astype(np.int16)),
                    ("k8_t2_i64", rng.integers(0, 2048, (8, 2))), ("k1_t0", np.zeros((1, 0), np.int16)),
                    ("fortran", np.asfortranarray(rng.integers(0, 2048, (4, 3)).astype(np.uint16)))):  # fmt: skip
        buf = io.BytesIO()
        np.save(buf, a)
        out[name] = buf.getvalue()
    return out


# ---------------------------------------------------------------- HTTP request body
def _http_errors():
    from csm_core import OptionError
    from pydantic import ValidationError

    return (ValidationError, OptionError)


def _parse_http(data: bytes, scratch: Path) -> None:
    from csm_app.api_schema import SpeechRequest
    from csm_core import GenerationOptions

    req = SpeechRequest.model_validate_json(data)
    _expect(isinstance(req.input, str) and 0 < len(req.input), "bad request")
    GenerationOptions.from_mapping(req.options(), where="body")  # what the server builds next: checked, never crashes


def _seed_http(scratch: Path) -> dict[str, bytes]:
    bodies = {"minimal": {"input": "Hello."}, "voice": {"input": "Hi there.", "voice": "alice", "response_format": "mp3"},
              "options": {"input": "Two. Sentences.", "voice": "2", "temperature": 0.7, "topk": 40, "seed": 5,
                          "max_audio_ms": 2000, "split_sentences": False, "speed": 1, "model": "csm-1b"}}  # fmt: skip
    return {k: json.dumps(v).encode() for k, v in bodies.items()}


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("safetensors", _parse_safetensors, _safetensors_errors, _seed_safetensors,
               "csm_core.weights.read_safetensors (header and data, mapped and read)"),
        Target("torch_pt", _parse_torch_pt, _safetensors_errors, _seed_torch_pt,
               "csm_core.weights.read_torch_checkpoint (zip + restricted unpickler)"),
        Target("gguf", _parse_gguf, _gguf_errors, _seed_gguf, "csm_cpu.gguf_io.read_gguf"),
        Target("config", _parse_config, _config_errors, _seed_config,
               "CSMConfig.from_json (original / Hugging Face) and mimi_config_beside"),
        Target("tokenizer_json", _parse_tokenizer_json, _tokenizer_errors, _seed_tokenizer_json,
               "csm_tokenizers.load_hf_tokenizer_json, then encode/decode"),
        Target("tokenizer_model", _parse_tokenizer_model, _tokenizer_errors, _seed_tokenizer_model,
               "tiktoken rank files and SentencePiece models, then encode/decode"),
        Target("audio", _parse_audio, _audio_errors, _seed_audio, "csm_audio.io.read_audio / load_audio (bytes)"),
        Target("batch", _parse_batch, _input_errors, _seed_batch, "csm_app.corpus.read_rows (csm batch JSONL)"),
        Target("context", _parse_context, _input_errors, _seed_context,
               "csm_app.inputs.read_context + context_segments (voice/context JSONL)"),
        Target("codes", _parse_codes, _codes_errors, _seed_codes,
               "csm_app.inputs.read_codes (.npy of csm codec decode), then a tiny Mimi decode"),
        Target("http_body", _parse_http, _http_errors, _seed_http,
               "csm_app.api_schema.SpeechRequest (POST /v1/audio/speech JSON body) + GenerationOptions"),
    )  # fmt: skip
}
