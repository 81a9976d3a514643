"""`csm finetune` and using its result: dataset checks (named rows), the Mimi code cache, a LoRA run
end to end on the tiny model, `csm say --adapter`, and `csm convert --merge-adapter` for every backend."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mlx.core")
sf = pytest.importorskip("soundfile")

from click.testing import CliRunner  # noqa: E402

from csm_app.cli import main  # noqa: E402
from csm_app.finetune import CodeCache, build_examples, read_dataset, split_validation  # noqa: E402
from csm_app.inputs import InputError  # noqa: E402
from csm_core import csm_tiny  # noqa: E402

from app_helpers import require_tokenizer  # noqa: E402

SR = 24_000


def _wav(path: Path, seconds: float, seed: int) -> Path:
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    audio = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 400) * t) + 0.02 * rng.standard_normal(t.size)
    sf.write(str(path), audio.astype(np.float32), SR)
    return path


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


class FakeCodec:
    """Codes of a chosen length, counting its calls (the cache must spare them)."""

    def __init__(self, frames: int | None = None):
        self.frames, self.calls = frames, 0

    def encode(self, audio, num_codebooks):
        self.calls += 1
        T = self.frames if self.frames is not None else len(audio) // 1920
        return np.random.default_rng(T).integers(1, 2048, (num_codebooks, T))


@pytest.fixture(scope="module")
def tokenizer():
    from csm_tokenizers import load_tokenizer

    return load_tokenizer(require_tokenizer())


def _read(path):
    return sf.read(str(path), dtype="float32")[0]


def test_dataset_rows_become_sequences_and_codes_are_cached(tmp_path, tokenizer):
    a = _wav(tmp_path / "a.wav", 0.4, 1)
    _wav(tmp_path / "b.wav", 0.3, 2)
    (tmp_path / "copy.wav").write_bytes(a.read_bytes())  # same content, other name: one encoding
    data = _jsonl(tmp_path / "d.jsonl", [
        {"audio": "a.wav", "text": "Hello there.", "speaker": 1},
        {"audio": "b.wav", "text": "Second.", "context": [{"speaker": 1, "text": "Hello there.", "audio": "copy.wav"}]},
    ])
    rows = read_dataset(data)
    assert [r.where for r in rows] == [f"{data}:1", f"{data}:2"] and rows[1].context[0].audio == tmp_path / "copy.wav"
    cfg, codec = csm_tiny(), FakeCodec()
    cache = CodeCache(tmp_path / "cache", codec, cfg.audio_num_codebooks, "fake", _read)
    ex = build_examples(rows, tokenizer, cache, cfg)
    assert codec.calls == 2 and cache.hits == 1  # a.wav and copy.wav share their codes
    K = cfg.audio_num_codebooks
    audio_rows = ex[0].mask[:, :K].all(-1)
    assert audio_rows.sum() == 5 + 1 and (ex[0].tokens[-1, :K] == 0).all()  # 0.4 s = 5 frames, + EOS
    assert ex[1].mask[:, :K].all(-1).sum() == 6 + 4  # context turn + own audio, each with EOS
    again = CodeCache(tmp_path / "cache", FakeCodec(), cfg.audio_num_codebooks, "fake", _read)
    ex2 = build_examples(rows, tokenizer, again, cfg)
    assert again.encoded == 0 and all((x.tokens == y.tokens).all() for x, y in zip(ex, ex2))
    train, val = split_validation(ex * 5, 0.2, seed=0)
    assert len(train) == 8 and len(val) == 2


def test_csv_dataset(tmp_path):
    _wav(tmp_path / "a.wav", 0.2, 1)
    data = tmp_path / "d.csv"
    data.write_text("audio,text,speaker\na.wav,Hi there,2\n")
    (row,) = read_dataset(data)
    assert row.speaker == 2 and row.audio == tmp_path / "a.wav" and row.where == f"{data}:2"


@pytest.mark.parametrize("rows, match", [
    ([{"text": "no audio here"}], r"d.jsonl:1: text without audio"),
    ([{"audio": "a.wav", "text": "ok"}, {"audio": "", "text": "x"}], r"d.jsonl:2: text without audio"),
    ([{"audio": "a.wav", "text": "ok", "context": [{"text": "said", "speaker": 0}]}], r"d.jsonl:1: context turn 0 .* without audio"),
    ([{"audio": "a.wav", "text": "", "speaker": 0}], r"d.jsonl:1: 'text' must be a non-empty string"),
    ([{"audio": "a.wav", "text": "ok", "voice": 3}], r"d.jsonl:1: unknown key"),
    ([], r"no usable rows"),
])
def test_bad_rows_are_named(tmp_path, rows, match):
    _wav(tmp_path / "a.wav", 0.2, 1)
    with pytest.raises(InputError, match=match):
        read_dataset(_jsonl(tmp_path / "d.jsonl", rows))


def test_unreadable_and_too_long_audio_are_named(tmp_path, tokenizer):
    cfg = csm_tiny()
    (tmp_path / "broken.wav").write_text("not audio at all")
    rows = read_dataset(_jsonl(tmp_path / "d.jsonl", [{"audio": "broken.wav", "text": "x"}]))
    cache = CodeCache(tmp_path / "c", FakeCodec(), cfg.audio_num_codebooks, "fake", _read)
    with pytest.raises(InputError, match=r"d.jsonl:1: cannot read audio .*broken.wav"):
        build_examples(rows, tokenizer, cache, cfg)
    rows = read_dataset(_jsonl(tmp_path / "d.jsonl", [{"audio": "missing.wav", "text": "x"}]))
    with pytest.raises(InputError, match=r"d.jsonl:1: cannot read audio .*missing.wav"):
        build_examples(rows, tokenizer, cache, cfg)
    _wav(tmp_path / "long.wav", 0.2, 1)
    rows = read_dataset(_jsonl(tmp_path / "d.jsonl", [{"audio": "long.wav", "text": "x"}]))
    cache = CodeCache(tmp_path / "c2", FakeCodec(frames=cfg.backbone.max_seq_len), cfg.audio_num_codebooks, "fake", _read)
    with pytest.raises(InputError, match=r"d.jsonl:1: audio .*long.wav \(163.8 s\) .* over the model's 2048-position context window"):
        build_examples(rows, tokenizer, cache, cfg)


@pytest.fixture(scope="module")
def finetuned(tiny_model, tmp_path_factory):
    """`csm finetune` (LoRA rank 4, float32, 4 steps) on three tiny rows; then resumed to 5 steps."""
    d = tmp_path_factory.mktemp("ft")
    for i in range(3):
        _wav(d / f"{i}.wav", 0.3 + 0.1 * i, i)
    data = _jsonl(d / "data.jsonl", [{"audio": f"{i}.wav", "text": f"Line number {i}.", "speaker": i % 2} for i in range(3)])
    out = d / "out"
    args = ["finetune", str(data), "--model", str(tiny_model), "--out", str(out), "--rank", "4", "--dtype", "float32",
            "--warmup", "1", "--lr", "1e-3", "--save-every", "2", "--eval-every", "2",
            "--val-fraction", "0.34", "--train-heads", "--offline"]
    first = CliRunner().invoke(main, [*args, "--steps", "4"])
    assert first.exit_code == 0, first.output
    second = CliRunner().invoke(main, [*args, "--steps", "5", "--resume"])
    assert second.exit_code == 0, second.output
    return tiny_model, out, first.output, second.output


def test_finetune_command_trains_caches_and_resumes(finetuned):
    _, out, first, second = finetuned
    assert "3/3 rows ready (3 encoded, 0 from the cache)" in first
    assert "2 training and 1 validation sequences" in first
    assert "(0 encoded, 3 from the cache)" in second and "resumed from" in second
    lines = (out / "loss.csv").read_text().splitlines()
    assert lines[0].startswith("step,lr,loss,backbone_loss,decoder_loss") and len(lines) == 1 + 5
    assert (out / "adapter" / "adapter.safetensors").is_file() and (out / "checkpoints").is_dir()
    assert "matplotlib" in first or (out / "loss.png").is_file()


def test_say_with_adapter(finetuned, tmp_path):
    model, out, _, _ = finetuned
    wav = tmp_path / "a.wav"
    r = CliRunner().invoke(main, ["say", "Hi.", "-o", str(wav), "--model", str(model), "--adapter", str(out / "adapter"),
                                  "--temperature", "0", "--max-audio-ms", "400", "--no-watermark", "--offline", "-q"])
    assert r.exit_code == 0, r.output
    assert sf.info(str(wav)).samplerate == SR
    r = CliRunner().invoke(main, ["say", "Hi.", "-o", str(wav), "--model", str(model), "--adapter", str(out / "adapter"),
                                  "--backend", "cpu", "--offline", "-q"])
    assert r.exit_code == 1 and "mlx backend only" in r.output and "--merge-adapter" in r.output


def test_merged_adapter_loads_on_every_backend(finetuned, tmp_path):
    from csm_core.testing.csm import make_prompt
    from csm_core.weights import load_csm_checkpoint
    from csm_mlx.backend import MlxBackend
    from csm_mlx.model import CSMModel
    from csm_mlx.training.lora import attach_adapter, load_adapter

    model, out, _, _ = finetuned
    config, weights = load_csm_checkpoint(model)
    net = CSMModel(config).load_canonical(weights, "float32")
    attach_adapter(net, load_adapter(out / "adapter", config))
    tokens, mask = make_prompt(config, np.random.default_rng(3))
    codes = np.random.default_rng(4).integers(0, 2048, (1, config.audio_num_codebooks))
    ref = MlxBackend(config, model=net).teacher_forced_logits(tokens, mask, codes)

    got = {}
    for target, quant in (("safetensors", "f32"), ("gguf", "f32"), ("mlx", "f32")):
        dst = tmp_path / (f"m.{target}" if target == "gguf" else target)
        r = CliRunner().invoke(main, ["convert", str(model), str(dst), "--to", target, "--quant", quant,
                                      "--merge-adapter", str(out / "adapter")])
        assert r.exit_code == 0, r.output
        got[target] = dst
    merged_cfg, merged = load_csm_checkpoint(got["safetensors"])
    backends = {"mlx (safetensors)": MlxBackend(merged_cfg, merged), "mlx (converted)": MlxBackend.load(got["mlx"])}
    cpu = pytest.importorskip("csm_cpu.backend")
    backends["cpu (safetensors)"] = cpu.CpuBackend(merged_cfg, merged, "f32", threads=1)
    backends["cpu (gguf)"] = cpu.CpuBackend.from_gguf(got["gguf"], threads=1)
    for name, be in backends.items():
        for a, b in zip(be.teacher_forced_logits(tokens, mask, codes), ref):
            err = np.abs(a - b).max()
            assert err <= 1e-5 * max(1.0, np.abs(b).max()), f"{name}: max |d| {err:.2e} vs base + adapter"
