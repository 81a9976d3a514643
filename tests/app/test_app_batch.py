"""`csm batch` (csm_app.corpus): corpus synthesis on the tiny model — what it writes equals `csm say`,
every bad row is reported with file:line before anything is generated, and a run killed with
SIGKILL at random moments resumes to exactly the files and manifest of an uninterrupted run."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from app_helpers import place_in_cache, wav_info

TEXT = "Hello from the command line"
GREEDY = ["--temperature", "0", "--max-audio-ms", "800", "--no-watermark", "--threads", "1"]


@pytest.fixture
def cli(tiny_model, hub_cache, monkeypatch):
    from csm_app.cli import main

    place_in_cache(hub_cache, "sesame/csm-1b", tiny_model)
    monkeypatch.setenv("CSM_NUM_THREADS", "1")
    monkeypatch.setenv("CSM_AUDIO_PAIR", "0")  # bit-exact audio run to run
    return lambda *args: CliRunner().invoke(main, list(args))


def _voice(tmp_path):
    clip = tmp_path / "voice.wav"
    sf.write(str(clip), np.sin(np.arange(12_000) * 0.05).astype(np.float32) * 0.3, 16_000)
    (tmp_path / "voice.jsonl").write_text(json.dumps({"speaker": 1, "text": "A voice to copy", "audio": "voice.wav"}))
    return clip


def _manifest(out: Path) -> dict[str, dict]:
    rows = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    return {r["id"]: r for r in rows}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_batch_writes_what_say_writes(cli, tmp_path, monkeypatch):
    from csm_app.facade import CSM

    _voice(tmp_path)
    requests = tmp_path / "requests.jsonl"
    rows = [{"text": TEXT, "id": "first"},
            {"text": "Second request, said by speaker one", "speaker": 1, "output": "sub/two.flac"},
            {"text": "Third, in the copied voice", "speaker": 1, "voice": "voice.jsonl"},
            {"text": "Fourth, in the copied voice too", "speaker": 1,
             "context": [{"speaker": 1, "text": "A voice to copy", "audio": "voice.wav"}]}]  # fmt: skip
    requests.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    encoded = []
    real_encode = CSM.encode_context
    monkeypatch.setattr(CSM, "encode_context", lambda self, ctx: encoded.append(len(ctx)) or real_encode(self, ctx))
    out = tmp_path / "out"
    result = cli("batch", str(requests), "-o", str(out), "--slots", "3", *GREEDY)
    assert result.exit_code == 0, result.output
    assert encoded == [1]  # the voice file both requests name is read and encoded once
    lines = {json.loads(x)["where"].rsplit(":", 1)[1]: json.loads(x) for x in result.stdout.splitlines()}
    assert sorted(lines) == ["1", "2", "3", "4"]
    assert lines["1"]["id"] == "first" and lines["1"]["output"] == "first.wav"
    assert lines["2"]["output"] == "sub/two.flac" and sf.info(str(out / "sub" / "two.flac")).format == "FLAC"
    assert lines["3"]["voice"] == "voice.jsonl"
    assert all(x["frames"] == 10 and x["duration_s"] == 0.8 and x["stop"] == "max_length" for x in lines.values())
    manifest = _manifest(out)
    assert set(manifest) == {x["id"] for x in lines.values()}
    for row in manifest.values():
        f = out / row["output"]
        assert f.stat().st_size == row["bytes"] and _sha(f) == row["sha256"] and row["sample_rate"] == 24_000
        assert row["watermark"] == "none" and row["seed"] is not None
    voice = ["-s", "1", "--context", str(tmp_path / "voice.jsonl")]
    for key, args in zip("1234", [[], ["-s", "1"], voice, voice]):
        alone = tmp_path / "alone.wav"
        said = cli("say", rows[int(key) - 1]["text"], *GREEDY, "--no-split", "-o", str(alone), *args)
        assert said.exit_code == 0, said.output
        if key != "2":
            np.testing.assert_allclose(wav_info(out / lines[key]["output"])[0], wav_info(alone)[0], atol=1.01 / 32767)
    again = cli("batch", str(requests), "-o", str(out), *GREEDY)  # all done: nothing to generate
    assert again.exit_code == 0 and again.stdout == "" and "4 of 4 rows are already done" in again.output


def test_csv_and_parquet_requests_with_per_row_options(cli, tmp_path):
    csv_file = tmp_path / "requests.csv"
    csv_file.write_text("id,text,speaker,seed,temperature,max_audio_ms\n"
                        "a,First line,0,7,0.8,400\n"
                        "b,\"Second, with a comma\",1,,0,240\n")  # fmt: skip
    out = tmp_path / "out_csv"
    result = cli("batch", str(csv_file), "-o", str(out), "--no-watermark", "--threads", "1")
    assert result.exit_code == 0, result.output
    m = _manifest(out)
    assert m["a"]["seed"] == 7 and m["a"]["frames"] <= 5 and m["b"]["frames"] <= 3
    assert m["a"]["where"].endswith("requests.csv:2") and m["b"]["text"] == "Second, with a comma"
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    table = pa.table({"id": ["a", "b"], "text": ["First line", "Second, with a comma"], "speaker": [0, 1],
                      "seed": [7, None], "temperature": [0.8, 0.0], "max_audio_ms": [400, 240]})  # fmt: skip
    pq.write_table(table, tmp_path / "requests.parquet")
    out2 = tmp_path / "out_parquet"
    result = cli("batch", str(tmp_path / "requests.parquet"), "-o", str(out2), "--no-watermark", "--threads", "1")
    assert result.exit_code == 0, result.output
    m2 = _manifest(out2)
    for rid in "ab":  # the same rows from either file: the same audio (derived seeds depend on the id)
        assert m2[rid]["sha256"] == m[rid]["sha256"] and m2[rid]["seed"] == m[rid]["seed"]


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"text": "ok"}\n{"text": "x"', "requests.jsonl:2: not a JSON object"),
        ('{"text": "ok"}\n{"speaker": 1}', "requests.jsonl:2: 'text' must be a non-empty string"),
        ('{"text": "ok", "voices": "x"}', "requests.jsonl:1: unknown key(s) 'voices'"),
        ('{"text": "a", "output": "x.wav"}\n{"text": "b", "output": "x.wav"}', "requests.jsonl:2: output 'x.wav' is also"),
        ('{"text": "a", "id": "same"}\n{"text": "b", "id": "same"}', "requests.jsonl:2: id 'same' is also"),
        ('{"text": "a", "id": "../up"}', "'id' must be 1-128 of letters"),
        ('{"text": "a", "output": "x.aiff"}', "cannot tell the audio format of output 'x.aiff'"),
        ('{"text": "a", "output": "../x.wav"}', "must not climb out of the output directory"),
        ('{"text": "a", "speaker": -1}', "'speaker' must be an integer >= 0"),
        ('{"text": "a", "temperature": -1}', "requests.jsonl:1.temperature must be >= 0"),
        ('{"text": "a", "topk": "many"}', "requests.jsonl:1.topk must be an integer"),
        ('{"text": "a", "voice": "missing.jsonl"}', "requests.jsonl:1: voice file"),
        ('{"text": "a", "context": [{"speaker": 0}]}', "requests.jsonl:1: context[0]: expected a JSON object with 'text'"),
        ('{"text": "a", "context": [{"text": "b", "audio": "none.wav"}]}', "audio file"),
        ('{"text": "a", "context": [{"text": "no audio"}]}', "has no audio"),
        ('{"text": "a", "context": 3}', "'context' must be a list of turns or a JSONL file path"),
        ("\n\n", "no requests"),
    ],
)
def test_bad_rows_are_usage_errors_before_anything_runs(cli, tmp_path, content, message):
    requests = tmp_path / "requests.jsonl"
    requests.write_text(content)
    result = cli("batch", str(requests), "-o", str(tmp_path / "out"), *GREEDY)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "out").exists()


def test_all_bad_rows_are_listed_and_model_checks_come_first(cli, tmp_path):
    requests = tmp_path / "requests.jsonl"
    lines = [{"text": "ok"}, {"speaker": 1}, {"text": "b", "topk": 0}, {"text": "ok again"}]
    requests.write_text("\n".join(map(json.dumps, lines)))
    result = cli("batch", str(requests), "-o", str(tmp_path / "out"), *GREEDY)
    assert result.exit_code == 2 and "2 bad request(s)" in result.output
    assert "requests.jsonl:2:" in result.output and "requests.jsonl:3.topk" in result.output
    lines = [{"text": "ok"}] * 3 + [{"text": "word " * 3000, "split_sentences": False}]
    requests.write_text("\n".join(map(json.dumps, lines)))
    out = tmp_path / "out"
    result = cli("batch", str(requests), "-o", str(out), *GREEDY)
    assert result.exit_code == 2 and "requests.jsonl:4: the target text takes" in result.output
    assert not (out / "manifest.jsonl").exists()  # nothing was generated


def test_unwritable_output_directory_is_refused_before_generating(cli, tmp_path):
    requests = tmp_path / "requests.jsonl"
    requests.write_text(json.dumps({"text": "ok"}))
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = cli("batch", str(requests), "-o", str(blocker / "out"), *GREEDY)
    assert result.exit_code == 2 and "is not writable" in result.output


def test_resume_keeps_finished_rows_and_redoes_the_rest(cli, tmp_path):
    requests = tmp_path / "requests.jsonl"
    requests.write_text("\n".join(json.dumps({"text": f"Row number {i}.", "id": f"r{i}"}) for i in range(4)))
    out = tmp_path / "out"
    assert cli("batch", str(requests), "-o", str(out), *GREEDY).exit_code == 0
    first = _manifest(out)
    (out / "r1.wav").unlink()  # a lost file
    (out / "r2.wav").write_bytes(b"RIFF")  # a file that does not match its manifest row
    with open(out / "manifest.jsonl", "ab") as f:
        f.write(b'{"id": "r3", "trunc')  # a torn last line
    again = cli("batch", str(requests), "-o", str(out), *GREEDY)
    assert again.exit_code == 0, again.output
    assert sorted(json.loads(x)["id"] for x in again.stdout.splitlines()) == ["r1", "r2"]
    assert _manifest(out) == first
    for rid, row in first.items():
        assert _sha(out / row["output"]) == row["sha256"]


# ---------------------------------------------------------------- kill -9 at random moments
def _run_batch(requests: Path, out: Path, model: Path, extra=()) -> subprocess.Popen:
    env = {**os.environ, "CSM_NUM_THREADS": "1", "CSM_AUDIO_PAIR": "0", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "csm_app.cli", "batch", str(requests), "-o", str(out), "--model", str(model),
           "--threads", "1", "--max-audio-ms", "640", "--slots", "2", "-q", *extra]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def _check_invariants(out: Path) -> None:
    """Never a manifest row without its whole file; never a truncated file under a final name."""
    if (out / "manifest.jsonl").exists():
        for row in _manifest_tolerant(out).values():
            f = out / row["output"]
            assert f.is_file() and _sha(f) == row["sha256"]
    for f in out.glob("*.wav"):
        audio, sr = sf.read(str(f))
        assert sr == 24_000 and audio.size > 0 and audio.size % 1920 == 0


def _manifest_tolerant(out: Path) -> dict[str, dict]:
    rows = {}
    for line in (out / "manifest.jsonl").read_bytes().splitlines(keepends=True):
        if line.endswith(b"\n"):
            r = json.loads(line)
            rows[r["id"]] = r
    return rows


@pytest.mark.parametrize("sampling", [["--temperature", "0"], ["--seed", "5"]], ids=["greedy", "seeded"])
def test_sigkill_at_random_points_then_resume_equals_an_uninterrupted_run(tiny_model, tmp_path, sampling):
    requests = tmp_path / "requests.jsonl"
    requests.write_text("\n".join(json.dumps({"text": f"Sentence number {i} of the corpus."}) for i in range(12)))
    clean = tmp_path / "clean"
    started = time.perf_counter()
    p = _run_batch(requests, clean, tiny_model, sampling)
    assert p.wait(timeout=600) == 0, p.stderr.read().decode()
    whole = time.perf_counter() - started  # kills land at random points of a run this long
    want = _manifest(clean)
    assert len(want) == 12
    out = tmp_path / "killed"
    rng = random.Random(1234)
    kills, scale = 0, 0.9
    for _ in range(8):
        p = _run_batch(requests, out, tiny_model, sampling)
        time.sleep(rng.uniform(0.2, 1.0) * scale * whole)
        if p.poll() is not None:  # it finished first: with no kill yet, start over sooner
            if kills:
                break
            shutil.rmtree(out, ignore_errors=True)
            scale /= 2
            continue
        p.send_signal(signal.SIGKILL)
        p.wait()
        kills += 1
        _check_invariants(out)
        if kills == 4:
            break
    p = _run_batch(requests, out, tiny_model, sampling)
    assert p.wait(timeout=600) == 0, p.stderr.read().decode()
    assert kills >= 1
    got = _manifest(out)
    assert set(got) == set(want)
    for rid, row in want.items():
        assert got[rid] == {**row}  # every field, including the file's sha256
        assert _sha(out / row["output"]) == row["sha256"]
    assert not list(out.rglob(".*.tmp"))
    assert len((out / "manifest.jsonl").read_text().splitlines()) >= len(want)
