"""`csm serve` as a real process: it starts, serves named voices, and on SIGTERM stops admitting,
lets running streams finish within the grace period, cancels the rest and exits 0."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from server_helpers import TEXT, VOICE_TEXT

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")


def start_serve(tiny_model, *args, env=None):
    try:
        socket.create_server(("127.0.0.1", 0)).close()
    except OSError as e:
        pytest.skip(f"cannot listen on a local TCP port here: {e}")
    script = Path(sys.executable).with_name("csm")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "csm_app.cli"]
    proc = subprocess.Popen(
        cmd + ["serve", "--model", str(tiny_model), "--port", "0", "--temperature", "0", "--no-watermark",
               "--threads", "1", *args],
        stderr=subprocess.PIPE, env={**os.environ, "CSM_NUM_THREADS": "1", **(env or {})}, text=True,
    )  # fmt: skip
    seen = []
    for line in proc.stderr:  # warnings may come first; EOF if the server died
        seen.append(line)
        if "csm: serving on http://127.0.0.1:" in line:
            port = int(line.split("127.0.0.1:")[1].split()[0])
            rest = []
            threading.Thread(target=lambda: rest.extend(proc.stderr), daemon=True).start()
            proc.stderr_lines = rest
            return proc, f"http://127.0.0.1:{port}"
    proc.wait(30)
    pytest.fail("csm serve exited before serving:\n" + "".join(seen))


def test_csm_serve_command_with_voice_and_key(tiny_model, tmp_path):
    sf.write(str(tmp_path / "voice.wav"), np.sin(np.arange(12_000) * 0.05).astype(np.float32) * 0.3, 16_000)
    voice = tmp_path / "voice.jsonl"
    voice.write_text(json.dumps({"speaker": 1, "text": VOICE_TEXT, "audio": "voice.wav"}) + "\n")
    proc, url = start_serve(tiny_model, "--voice", f"narrator={voice}", "--max-audio-ms", "400",
                            "--data-dir", str(tmp_path / "data"), env={"CSM_API_KEY": "k"})
    try:
        with httpx.Client(base_url=url, timeout=60, headers={"Authorization": "Bearer k"}) as c:
            voices = c.get("/v1/audio/voices").json()["data"]
            assert [(v["id"], v["speaker"], v["context_turns"], v["source"]) for v in voices] == [("narrator", 1, 1, "cli")]
            r = c.post("/v1/audio/speech", json={"input": TEXT, "voice": "narrator", "response_format": "pcm"})
            assert r.status_code == 200 and len(r.content) == 2 * 5 * 1920  # the command's --max-audio-ms
            r = c.post("/v1/audio/speech", json={"input": TEXT, "max_audio_ms": 800})
            assert r.status_code == 400 and "above this server's limit of 400 ms" in r.json()["error"]["message"]
            assert httpx.get(url + "/v1/models").status_code == 401  # CSM_API_KEY is the key
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0


def test_sigterm_with_streams_running_exits_cleanly(tiny_model, tmp_path):
    proc, url = start_serve(tiny_model, "--slots", "2", "--grace", "3", "--max-audio-ms", "90000",
                            "--data-dir", str(tmp_path))
    results: dict = {}
    exited = threading.Event()

    def stream(name, max_ms, delay):
        got = bytearray()
        try:
            with httpx.Client(base_url=url, timeout=120) as c:
                body = {"input": TEXT, "response_format": "pcm", "max_audio_ms": max_ms}
                with c.stream("POST", "/v1/audio/speech", json=body) as r:
                    results[name + "_status"] = r.status_code
                    for piece in r.iter_raw():
                        got += piece
                        if not exited.is_set():
                            time.sleep(delay)  # a slow listener: its stream outlives the grace period
            results[name] = ("complete", len(got))
        except httpx.HTTPError as e:
            results[name] = (type(e).__name__, len(got))

    short = threading.Thread(target=stream, args=("short", 8000, 0.02))
    long = threading.Thread(target=stream, args=("long", 90_000, 0.5))
    short.start()
    long.start()
    deadline = time.monotonic() + 60
    while not (results.get("short_status") and results.get("long_status")) and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    time.sleep(0.3)
    try:  # no new request is admitted: refused, or 503 if the socket was still open
        r = httpx.post(url + "/v1/audio/speech", json={"input": TEXT}, timeout=10)
        assert r.status_code == 503 and r.json()["error"]["code"] == "shutting_down"
    except httpx.ConnectError:
        pass
    code = proc.wait(60)
    elapsed = time.monotonic() - t0
    exited.set()  # now read what the server sent before it cut the stream
    short.join(60)
    long.join(60)
    assert code == 0 and elapsed < 3 + 10
    assert results["short"] == ("complete", 2 * 100 * 1920)  # finished within the grace period
    assert results["long"][0] != "complete" or results["long"][1] < 2 * 1125 * 1920  # cut after it
    assert "csm: stopped" in "".join(proc.stderr_lines)


@pytest.mark.parametrize(
    "voice, message",
    [
        ("narrator", "expected NAME=CONTEXT.jsonl"),
        ("3={jsonl}", "digits name speaker ids"),
        ("a={missing}", "cannot read it"),
        ("a={bad}", "bad.jsonl:1: expected a JSON object with 'text'"),
        ("a={empty}", "has no turns"),
        ("a={silent}", "has a turn without 'audio'"),
        ("a/b={jsonl}", "must start with a letter"),
    ],
)
def test_csm_serve_bad_voices_are_usage_errors(tmp_path, voice, message):
    from click.testing import CliRunner

    from csm_app.cli import main

    (tmp_path / "v.jsonl").write_text(json.dumps({"text": "hi", "audio": "v.wav"}))
    (tmp_path / "bad.jsonl").write_text(json.dumps({"speaker": 2}))
    (tmp_path / "empty.jsonl").write_text("\n")
    (tmp_path / "silent.jsonl").write_text(json.dumps({"text": "no audio"}))
    spec = voice.format(jsonl=tmp_path / "v.jsonl", missing=tmp_path / "none.jsonl", bad=tmp_path / "bad.jsonl",
                        empty=tmp_path / "empty.jsonl", silent=tmp_path / "silent.jsonl")
    result = CliRunner().invoke(main, ["serve", "--voice", spec, "--model", str(tmp_path)])
    assert result.exit_code == 2 and message in result.output


def test_csm_serve_same_voice_twice_is_a_usage_error(tmp_path):
    from click.testing import CliRunner

    from csm_app.cli import main

    (tmp_path / "v.jsonl").write_text(json.dumps({"text": "hi", "audio": "v.wav"}))
    spec = f"a={tmp_path / 'v.jsonl'}"
    result = CliRunner().invoke(main, ["serve", "--voice", spec, "--voice", spec, "--model", str(tmp_path)])
    assert result.exit_code == 2 and "given twice" in result.output
