"""The `csm` command line on a tiny random model (torch-free): every command, its outputs and its
error paths, through click's CliRunner and as real subprocesses. Exit codes: 0 ok, 2 usage, 1 runtime
(one line; the traceback only with -v); `watermark detect` exits 3 when no mark is found."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import pty
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner


from app_helpers import place_in_cache, run_csm, wav_info

TEXT = "Hello from the command line"
GREEDY = ["--temperature", "0", "--max-audio-ms", "800", "--no-watermark", "--threads", "1"]


@pytest.fixture
def cli(tiny_model, hub_cache, monkeypatch):
    """Invoke `csm` in-process with the tiny model as sesame/csm-1b in a temporary, offline HF cache."""
    from csm_app.cli import main

    place_in_cache(hub_cache, "sesame/csm-1b", tiny_model)
    monkeypatch.setenv("CSM_NUM_THREADS", "1")

    def invoke(*args, input=None):
        return CliRunner().invoke(main, list(args), input=input)

    return invoke


@pytest.fixture(scope="module")
def greedy_audio(tiny_model):
    """The greedy 10-frame utterance of TEXT streamed by the facade (as `csm say` does)."""
    from csm_app import CSM

    tts = CSM.load(tiny_model, watermark=False, threads=1)
    audio = np.concatenate(list(tts.stream(TEXT, temperature=0, max_audio_ms=800)))
    whole = tts.generate(TEXT, temperature=0, max_audio_ms=800)  # one-shot decode: same audio
    np.testing.assert_allclose(audio, whole, atol=1e-4)
    return audio


@pytest.fixture(scope="module")
def greedy_pcm(greedy_audio):
    from csm_app.audio_io import pcm16

    return pcm16(greedy_audio)


# ---------------------------------------------------------------- say: outputs
def test_say_to_file_is_24khz_mono_and_matches_facade(cli, tmp_path, greedy_audio):
    wav = tmp_path / "out.wav"
    result = cli("say", TEXT, *GREEDY, "-o", str(wav))
    assert result.exit_code == 0, result.output
    audio, sr, channels = wav_info(wav)
    assert (sr, channels, audio.size) == (24_000, 1, 10 * 1920)
    assert sf.info(str(wav)).subtype == "PCM_16"
    np.testing.assert_allclose(audio, np.clip(greedy_audio, -1, 1), atol=1.01 / 32767)


def test_say_text_from_stdin_and_file_and_pcm_to_stdout(cli, tmp_path, greedy_pcm):
    from_stdin = cli("say", "-", *GREEDY, "-o", "-", "--format", "pcm", input=TEXT)
    assert from_stdin.exit_code == 0, from_stdin.output
    assert from_stdin.stdout_bytes == greedy_pcm
    text_file = tmp_path / "text.txt"
    text_file.write_text(TEXT + "\n")
    from_file = cli("say", "-i", str(text_file), *GREEDY, "-o", "-", "--format", "pcm")
    assert from_file.exit_code == 0, from_file.output
    assert from_file.stdout_bytes == greedy_pcm


def test_say_wav_to_stdout_streams_a_readable_wav(cli, greedy_pcm):
    result = cli("say", TEXT, *GREEDY, "-o", "-")
    assert result.exit_code == 0, result.output
    raw = result.stdout_bytes
    assert raw[:4] == b"RIFF" and raw[8:12] == b"WAVE"
    assert raw[44:] == greedy_pcm  # header, then the samples as they came


def test_say_flac(cli, tmp_path):
    out = tmp_path / "out.flac"
    result = cli("say", TEXT, *GREEDY, "-o", str(out))
    assert result.exit_code == 0, result.output
    info = sf.info(str(out))
    assert (info.format, info.samplerate, info.channels, info.frames) == ("FLAC", 24_000, 1, 10 * 1920)


def test_say_with_context_flags_and_jsonl_agree(cli, tmp_path, greedy_pcm):
    clip = tmp_path / "ctx.wav"
    sf.write(str(clip), np.sin(np.arange(12_000) * 0.05).astype(np.float32) * 0.3, 16_000)  # resampled on read
    flags = cli("say", TEXT, *GREEDY, "-o", "-", "--format", "pcm",
                "--context-text", "A voice to copy", "--context-audio", str(clip), "--context-speaker", "1")
    assert flags.exit_code == 0, flags.output
    jsonl = tmp_path / "ctx.jsonl"
    jsonl.write_text(json.dumps({"speaker": 1, "text": "A voice to copy", "audio": "ctx.wav"}) + "\n")
    from_jsonl = cli("say", TEXT, *GREEDY, "-o", "-", "--format", "pcm", "--context", str(jsonl))
    assert from_jsonl.exit_code == 0, from_jsonl.output
    assert flags.stdout_bytes == from_jsonl.stdout_bytes
    assert len(flags.stdout_bytes) == 2 * 10 * 1920
    assert flags.stdout_bytes != greedy_pcm  # the context reached the prompt


def test_say_watermark_on_is_detected(cli, tmp_path, greedy_audio):
    wav = tmp_path / "marked.wav"
    result = cli("say", TEXT, "--temperature", "0", "--max-audio-ms", "4000", "--no-split", "-o", str(wav))
    assert result.exit_code == 0, result.output
    audio, sr, _ = wav_info(wav)
    assert sr == 24_000 and audio.size == 50 * 1920
    found = cli("watermark", "detect", str(wav))
    assert found.exit_code == 0, found.output
    assert "watermark found payload=0xd4d39238" in found.output
    plain = tmp_path / "plain.wav"
    sf.write(str(plain), np.clip(np.tile(greedy_audio, 5), -1, 1), 24_000)  # 4 s, never marked
    missing = cli("watermark", "detect", str(plain))
    assert missing.exit_code == 3 and "watermark not found" in missing.output


# ---------------------------------------------------------------- say: errors
@pytest.mark.parametrize(
    "args, message",
    [
        (["--backend", "tpu"], "unknown backend 'tpu'"),
        (["--format", "aiff"], "'aiff' is not one of"),
        (["--max-audio-ms", "-80"], "-80 is not in the range"),
        (["-o", "out.xyz"], "cannot tell the audio format from 'out.xyz'"),
        (["--quant", "q2_k"], "unknown quant 'q2_k'"),
        (["--threads", "0"], "0 is not in the range"),
        (["--context-text", "a", "--context-text", "b", "--context-audio", "x.wav"], "give one audio per turn"),
    ],
)
def test_say_usage_errors_exit_2(cli, args, message):
    result = cli("say", TEXT, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_say_text_twice_or_empty_is_a_usage_error(cli, tmp_path):
    text_file = tmp_path / "t.txt"
    text_file.write_text("hi")
    assert cli("say", "hi", "-i", str(text_file)).exit_code == 2
    empty = cli("say", "-", input="  \n")
    assert empty.exit_code == 2 and "empty" in empty.output


def test_say_without_text_on_a_terminal_is_a_usage_error(cli, monkeypatch):
    import csm_app.cli as cli_module

    monkeypatch.setattr(cli_module, "_is_terminal", lambda stream: stream is sys.stdin)
    result = cli("say")
    assert result.exit_code == 2 and "no text: pass TEXT, - (stdin) or -i FILE" in result.output


def test_say_refuses_binary_audio_to_a_terminal(cli, monkeypatch):
    import csm_app.cli as cli_module

    monkeypatch.setattr(cli_module, "_is_terminal", lambda stream: stream is sys.stdout)
    result = cli("say", TEXT, "-o", "-")
    assert result.exit_code == 2
    assert "refusing to write binary audio to a terminal" in result.output


def test_say_unreadable_context_audio_exits_1(cli, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"this is not audio at all" * 10)
    result = cli("say", TEXT, *GREEDY, "--context-text", "x", "--context-audio", str(bad))
    assert result.exit_code == 1
    assert f"{bad}: cannot decode audio" in result.output
    missing = cli("say", TEXT, *GREEDY, "--context-text", "x", "--context-audio", str(tmp_path / "none.wav"))
    assert missing.exit_code == 1 and "none.wav: file not found" in missing.output


def test_say_bad_jsonl_context_is_a_usage_error(cli, tmp_path):
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text('{"speaker": 0, "text": "ok"}\n{"speaker": 1}\n')
    result = cli("say", TEXT, "--context", str(jsonl))
    assert result.exit_code == 2 and "c.jsonl:2" in result.output


def test_missing_model_lists_what_was_looked_for(hub_cache, tmp_path):
    from csm_app.cli import main

    result = CliRunner().invoke(main, ["say", TEXT, "--offline"])
    assert result.exit_code == 1
    assert "no CSM weights found for 'sesame/csm-1b' (offline mode" in result.output
    assert f"{hub_cache}/models--sesame--csm-1b/snapshots/<rev>/ (not in the cache)" in result.output
    assert "huggingface-cli download sesame/csm-1b" in result.output
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    result = CliRunner().invoke(main, ["say", TEXT, "--model", str(empty_dir)])
    assert result.exit_code == 1
    for name in ("config.json", "model.safetensors", "transformers.safetensors.index.json", "ckpt.pt", "*.gguf"):
        assert f"{empty_dir}/{name}" in result.output


def test_missing_mimi_and_tokenizer_are_named(tiny_model, hub_cache, tmp_path):
    from csm_app.cli import main

    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("model.safetensors", "config.json"):
        (bare / name).symlink_to(tiny_model / name)
    no_mimi = CliRunner().invoke(main, ["say", TEXT, "--model", str(bare)])
    assert no_mimi.exit_code == 1
    assert "no Mimi codec weights found" in no_mimi.output and f"{bare}/mimi.safetensors" in no_mimi.output
    assert "models--kyutai--moshiko-pytorch-bf16" in no_mimi.output and "--mimi PATH" in no_mimi.output
    no_tok = CliRunner().invoke(main, ["say", TEXT, "--model", str(bare), "--mimi", str(tiny_model / "mimi.safetensors")])
    assert no_tok.exit_code == 1
    assert "no Llama-3 tokenizer found" in no_tok.output and f"{bare}/tokenizer.json" in no_tok.output


# ---------------------------------------------------------------- real subprocesses
def test_subprocess_exit_codes_and_tracebacks(tmp_path):
    env = {"HF_HUB_CACHE": str(tmp_path / "nothing"), "HF_HUB_OFFLINE": "1"}
    usage = run_csm("say", "hi", "--format", "aiff", env=env)
    assert usage.returncode == 2 and b"Usage: csm say" in usage.stderr
    runtime = run_csm("say", "hi", env=env)
    assert runtime.returncode == 1
    assert runtime.stderr.startswith(b"Error: no CSM weights found") and b"Traceback" not in runtime.stderr
    verbose = run_csm("say", "hi", "-v", env=env)
    assert verbose.returncode == 1 and b"Traceback (most recent call last)" in verbose.stderr


def test_subprocess_say_pipes_wav_to_stdout(tiny_model, tmp_path):
    proc = run_csm("say", "-", *GREEDY, "--model", str(tiny_model), "-o", "-", input=TEXT.encode())
    assert proc.returncode == 0, proc.stderr.decode()
    audio, sr = sf.read(io.BytesIO(proc.stdout), dtype="float32")
    assert sr == 24_000 and audio.shape == (10 * 1920,)


def _on_a_terminal(args, stream: str):
    """Run `csm ARGS` with stdout or stderr on a pseudo-terminal; (process, what the terminal got)."""
    main_fd, sub_fd = pty.openpty()
    script = shutil.which("csm", path=os.path.dirname(sys.executable))
    streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, stream: sub_fd}
    try:
        proc = subprocess.run([script, *args], **streams, timeout=120, env={**os.environ, "CSM_NUM_THREADS": "1"})
        os.set_blocking(main_fd, False)
        try:
            shown = os.read(main_fd, 65536)
        except BlockingIOError:
            shown = b""
    finally:
        os.close(sub_fd)
        os.close(main_fd)
    return proc, shown


def test_subprocess_refuses_a_real_terminal(tiny_model):
    """stdout on a pseudo-terminal: refused before anything is loaded."""
    proc, shown = _on_a_terminal(["say", TEXT, "--model", str(tiny_model), "-o", "-"], "stdout")
    assert proc.returncode == 2 and shown == b""
    assert b"refusing to write binary audio to a terminal" in proc.stderr


def test_subprocess_progress_only_on_a_terminal(tiny_model, tmp_path):
    wav = tmp_path / "p.wav"
    proc, shown = _on_a_terminal(["say", TEXT, *GREEDY, "--model", str(tiny_model), "-o", str(wav)], "stderr")
    assert proc.returncode == 0 and wav.is_file()
    assert b"\rcsm: 10 frames, 0.80 s of audio" in shown


def test_quiet_hides_progress_even_on_a_terminal(cli, monkeypatch, tmp_path):
    import csm_app.cli as cli_module

    monkeypatch.setattr(cli_module, "_is_terminal", lambda stream: stream is sys.stderr)
    result = cli("say", TEXT, *GREEDY, "-q", "-o", str(tmp_path / "q.wav"))
    assert result.exit_code == 0 and result.stderr == ""


# ---------------------------------------------------------------- other commands
def test_codec_encode_decode_round_trip(cli, tiny_model, tmp_path):
    from csm_app.facade import load_codec
    from csm_core.testing.mimi import mimi_test_audio

    clip = tmp_path / "in.wav"
    sf.write(str(clip), mimi_test_audio(24_000, seed=3), 24_000, subtype="FLOAT")
    codes_path = tmp_path / "codes.npy"
    enc = cli("codec", "encode", str(clip), "-o", str(codes_path))
    assert enc.exit_code == 0, enc.output
    codes = np.load(codes_path)
    mimi = load_codec(tiny_model / "mimi.safetensors", tiny_model / "config.json")
    np.testing.assert_array_equal(codes, mimi.encode(mimi_test_audio(24_000, seed=3)))
    assert codes.shape == (32, 13)
    out = tmp_path / "decoded.wav"
    dec = cli("codec", "decode", str(codes_path), "-o", str(out), "--mimi", str(tiny_model / "mimi.safetensors"))
    assert dec.exit_code == 0, dec.output
    audio, sr, _ = wav_info(out)
    assert sr == 24_000 and audio.size == 13 * 1920
    np.testing.assert_allclose(audio, np.clip(mimi.decode(codes.astype(np.int64)), -1, 1), atol=1.0 / 32767 + 1e-5)
    for fmt in ("ogg", "opus", "mp3", "pcm"):
        dec = cli("codec", "decode", str(codes_path), "-o", "-", "--format", fmt, "--mimi", str(tiny_model / "mimi.safetensors"))
        assert dec.exit_code == 0, (fmt, dec.output)
        if fmt == "pcm":
            assert len(dec.stdout_bytes) == 2 * 13 * 1920
        else:
            decoded, rate = sf.read(io.BytesIO(dec.stdout_bytes))
            assert rate == 24_000 and abs(decoded.shape[0] - 13 * 1920) < 2000, fmt  # lossy codecs pad
    not_npy = tmp_path / "x.npy"
    not_npy.write_bytes(b"garbage")
    bad = cli("codec", "decode", str(not_npy), "-o", str(tmp_path / "y.wav"))
    assert bad.exit_code == 1 and "not a numpy .npy array of codes" in bad.output


def test_tokenize(cli, tiny_model):
    plain = cli("tokenize", "Hello from Sesame.", "--tokenizer", str(tiny_model / "tokenizer.model"))
    assert plain.exit_code == 0 and plain.output.split() == ["9906", "505", "64027", "373", "13"]
    turn = cli("tokenize", "Hello from Sesame.", "--speaker", "0")  # tokenizer found through the cache
    assert turn.exit_code == 0, turn.output
    assert [int(t) for t in turn.output.split()] == [128000, 58, 15, 60, 9906, 505, 64027, 373, 13, 128001]


def test_info(cli, hub_cache, tiny_model):
    version = cli("--version")
    assert version.exit_code == 0 and "0.1.0" in version.output
    result = cli("info")
    assert result.exit_code == 0, result.output
    assert "csm-app" in result.output and "backends" in result.output and "cpu" in result.output
    assert f"hub cache       {hub_cache}" in result.output
    assert "model.safetensors (sesame layout)" not in result.output  # tiny model: original layout
    assert "(original layout)" in result.output
    missing = cli("info", "--model", "nobody/nothing")
    assert missing.exit_code == 0 and "not found" in missing.output


def test_watermark_detect_unreadable_file(cli, tmp_path):
    bad = tmp_path / "x.wav"
    bad.write_bytes(b"nope")
    result = cli("watermark", "detect", str(bad))
    assert result.exit_code == 1 and "cannot decode audio" in result.output


def test_convert_to_mlx_and_say_with_it(cli, tiny_model, tmp_path):
    pytest.importorskip("mlx.core")
    out = tmp_path / "mlx"
    conv = cli("convert", str(tiny_model), str(out), "--to", "mlx", "--quant", "f32")
    assert conv.exit_code == 0, conv.output
    assert (out / "model.safetensors").is_file()
    wav = tmp_path / "mlx.wav"
    said = cli("say", TEXT, *GREEDY, "--model", str(out), "--mimi", str(tiny_model / "mimi.safetensors"),
               "--tokenizer", str(tiny_model / "tokenizer.model"), "-o", str(wav))
    assert said.exit_code == 0, said.output
    assert wav_info(wav)[0].size == 10 * 1920
    on_cpu = cli("say", TEXT, *GREEDY, "--model", str(out), "--backend", "cpu", "--mimi",
                 str(tiny_model / "mimi.safetensors"), "--tokenizer", str(tiny_model / "tokenizer.model"), "-o", "-")
    assert on_cpu.exit_code == 1 and "runs on the mlx backend only" in on_cpu.output


@pytest.fixture
def gguf_model(cli, tiny_model, tmp_path):
    gguf_io = pytest.importorskip("csm_cpu.gguf_io", reason="csm_cpu has no GGUF writer yet")
    from csm_core import csm_tiny

    out = tmp_path / "tiny-q8_0.gguf"
    conv = cli("convert", str(tiny_model), str(out), "--to", "gguf", "--quant", "q8_0")
    assert conv.exit_code == 0, conv.output
    config, quant, _ = gguf_io.read_gguf(out)
    assert (config, quant) == (csm_tiny(), "q8_0")
    return out


def test_convert_to_gguf(gguf_model):
    assert gguf_model.stat().st_size > 0


def test_say_with_a_gguf_model(cli, gguf_model, tiny_model):
    said = cli("say", TEXT, *GREEDY, "--model", str(gguf_model), "--mimi", str(tiny_model / "mimi.safetensors"),
               "--tokenizer", str(tiny_model / "tokenizer.model"), "-o", "-", "--format", "pcm")
    assert said.exit_code == 0, said.output
    assert len(said.stdout_bytes) == 2 * 10 * 1920


def test_convert_errors(cli, tiny_model, tmp_path):
    bad_target = cli("convert", str(tiny_model), str(tmp_path / "o"), "--to", "onnx")
    assert bad_target.exit_code == 2
    missing = cli("convert", str(tmp_path / "none"), str(tmp_path / "o"), "--to", "mlx")
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_bench(cli, monkeypatch, tmp_path):
    unknown = cli("bench", "gpu")
    assert unknown.exit_code == 2
    from csm_app import bench

    with monkeypatch.context() as m:
        m.setattr(bench, "_candidates", lambda: [tmp_path])
        outside = cli("bench", "mimi")
    assert outside.exit_code == 1 and "tools/ folder, which was not found" in outside.output
    tools, _ = bench.find_tools_dir()
    assert tools is not None and (tools / "bench_mimi.py").is_file()
    passed_through = run_csm("bench", "mimi", "--no-such-option")  # the tool's own argparse answers
    assert passed_through.returncode == 2 and b"--no-such-option" in passed_through.stderr


def test_load_codec_prefers_csm_cpu_and_obeys_csm_codec(tiny_model, monkeypatch):
    from csm_app.facade import load_codec
    from csm_audio import Mimi as NumpyMimi
    from csm_core.testing.mimi import mimi_test_audio

    csm_cpu_mimi = pytest.importorskip("csm_cpu.mimi")
    args = (tiny_model / "mimi.safetensors", tiny_model / "config.json")
    monkeypatch.delenv("CSM_CODEC", raising=False)
    picked = load_codec(*args)
    assert isinstance(picked, csm_cpu_mimi.Mimi) and picked.fmt == "f32"
    monkeypatch.delenv("CSM_NUM_THREADS", raising=False)
    assert load_codec(*args, threads=1).threads == 1  # a Ray actor's --threads-per-actor bounds its codec too
    from csm_app import CSM

    assert CSM.load(tiny_model, threads=1, watermark=False).codec.threads == 1
    monkeypatch.setenv("CSM_CODEC", "cpu-bf16")
    assert load_codec(*args).fmt == "bf16"
    monkeypatch.setenv("CSM_CODEC", "numpy")
    forced = load_codec(*args)
    assert isinstance(forced, NumpyMimi)
    audio = mimi_test_audio(24_000, seed=3)
    np.testing.assert_array_equal(picked.encode(audio), forced.encode(audio))
    if importlib.util.find_spec("mlx") is not None:
        from csm_mlx.mimi.codec import MlxMimi

        monkeypatch.setenv("CSM_CODEC", "mlx")
        on_mlx = load_codec(*args)
        assert isinstance(on_mlx, MlxMimi)
        codes = forced.encode(audio)
        np.testing.assert_allclose(on_mlx.decode(codes), forced.decode(codes), atol=1e-3)
    monkeypatch.setenv("CSM_CODEC", "torch")
    with pytest.raises(ValueError, match="CSM_CODEC='torch': expected one of auto, cpu, cpu-bf16, numpy, mlx"):
        load_codec(*args)
