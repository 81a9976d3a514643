"""`csm serve` (csm_app.server, csm_app.speech_service) on a tiny random model: the OpenAI-compatible speech endpoint returns
what the facade generates, streams wav/pcm in HTTP/1.1 chunks, answers bad requests with JSON
errors, serves one generation at a time, and survives clients that leave mid-stream."""

from __future__ import annotations

import functools
import http.client
import io
import json
import socket
import threading

import numpy as np
import pytest
import soundfile as sf

TEXT = "Hello over HTTP"
VOICE_TEXT = "A voice to copy"


@pytest.fixture(scope="module")
def tts(tiny_model):
    from csm_app import CSM

    return CSM.load(tiny_model, threads=1, watermark=False)


@pytest.fixture(scope="module")
def voice_clip(tts):
    return tts.generate(VOICE_TEXT, speaker=1, temperature=0, max_audio_ms=400)


@pytest.fixture(scope="module")
def server(tts, voice_clip):
    from csm_app import Segment
    from csm_app.server import SpeechService, Voice, make_server

    narrator = Voice("narrator", 1, tuple(tts.encode_context([Segment(1, VOICE_TEXT, audio=voice_clip)])))
    service = SpeechService(tts, [narrator], defaults={"temperature": 0, "max_audio_ms": 800}, chunk_frames=4)
    try:
        srv = make_server(service, "127.0.0.1", 0)
    except OSError as e:
        pytest.skip(f"cannot listen on a local TCP port here: {e}")
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def connect(server) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(*server.server_address[:2], timeout=60)


def post(server, body, conn=None, path="/v1/audio/speech"):
    conn = conn or connect(server)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    return resp.status, dict(resp.getheaders()), resp.read()


def expected_pcm(tts, text=TEXT, speaker=0, context=()):
    from csm_app.audio_io import pcm16

    chunks = tts.stream(text, speaker, context, temperature=0, max_audio_ms=800, chunk_frames=4)
    return pcm16(np.concatenate(list(chunks)))


def same_pcm(a: bytes, b: bytes) -> bool:
    """Equal 16-bit audio, give or take 1 LSB: the codec picks how to split its products between
    two threads by timing, which can move a float sum's last bit (the codes are identical)."""
    x, y = np.frombuffer(a, "<i2").astype(np.int32), np.frombuffer(b, "<i2").astype(np.int32)
    return x.shape == y.shape and bool(np.all(np.abs(x - y) <= 1))


def assert_same_pcm(a: bytes, b: bytes) -> None:
    assert len(a) == len(b) and same_pcm(a, b), "the audio differs by more than 1 LSB"


def test_wav_streams_in_chunks_what_the_facade_generates(server, tts):
    status, headers, body = post(server, {"model": "tts-1", "input": TEXT, "voice": "0"})
    assert status == 200, body
    assert headers["Content-Type"] == "audio/wav" and headers["Transfer-Encoding"] == "chunked"
    assert headers["X-Sample-Rate"] == "24000"
    assert body[:4] == b"RIFF" and body[8:12] == b"WAVE"
    assert_same_pcm(body[44:], expected_pcm(tts))
    assert len(body) == 44 + 2 * 10 * 1920


def test_voices_speaker_ids_and_named_context(server, tts, voice_clip):
    from csm_app import Segment

    _, _, as_one = post(server, {"input": TEXT, "voice": 1, "response_format": "pcm"})
    _, _, as_digits = post(server, {"input": TEXT, "voice": "1", "response_format": "pcm"})
    status, headers, narrated = post(server, {"input": TEXT, "voice": "narrator", "response_format": "pcm"})
    assert status == 200 and headers["Content-Type"] == "audio/pcm"
    assert_same_pcm(as_one, expected_pcm(tts, speaker=1))
    assert_same_pcm(as_digits, as_one)
    assert_same_pcm(narrated, expected_pcm(tts, speaker=1, context=[Segment(1, VOICE_TEXT, audio=voice_clip)]))
    assert not same_pcm(narrated, as_one)


def test_request_options_override_the_defaults(server, tts):
    _, _, short = post(server, {"input": TEXT, "response_format": "pcm", "max_audio_ms": 400})
    assert len(short) == 2 * 5 * 1920
    _, _, a = post(server, {"input": TEXT, "response_format": "pcm", "temperature": 0.9, "seed": 3})
    _, _, b = post(server, {"input": TEXT, "response_format": "pcm", "temperature": 0.9, "seed": 3})
    assert_same_pcm(a, b)
    assert not same_pcm(a, expected_pcm(tts))


def test_flac_comes_whole_with_a_length(server, tts):
    status, headers, body = post(server, {"input": TEXT, "response_format": "flac"})
    assert status == 200 and headers["Content-Type"] == "audio/flac"
    assert int(headers["Content-Length"]) == len(body) and "Transfer-Encoding" not in headers
    audio, rate = sf.read(io.BytesIO(body), dtype="int16")
    want = np.frombuffer(expected_pcm(tts), "<i2").astype(np.int32)
    assert rate == 24_000 and audio.shape == want.shape
    assert np.abs(audio - want).max() <= 1  # libsndfile scales by 32768, pcm16 by 32767


def test_one_connection_serves_several_requests(server, tts):
    conn = connect(server)
    for fmt, size in (("pcm", 2 * 10 * 1920), ("wav", 44 + 2 * 10 * 1920), ("flac", None), ("pcm", 2 * 10 * 1920)):
        status, _, body = post(server, {"input": TEXT, "response_format": fmt}, conn=conn)
        assert status == 200 and (len(body) == size if size else body[:4] == b"fLaC")
    status, _, body = post(server, {"input": ""}, conn=conn)
    assert status == 400
    status, _, body = post(server, {"input": TEXT, "response_format": "pcm"}, conn=conn)
    assert status == 200
    assert_same_pcm(body, expected_pcm(tts))


@pytest.mark.parametrize(
    "body, status, param, message",
    [
        (b"{not json", 400, None, "not JSON"),
        (b"[1, 2]", 400, None, "must be a JSON object"),
        ({"voice": "0"}, 400, "input", "'input' must be a non-empty string"),
        ({"input": "   "}, 400, "input", "'input' must be a non-empty string"),
        ({"input": "x" * 5000}, 400, "input", "at most 4096"),
        ({"input": TEXT, "voice": "alloy"}, 400, "voice", "unknown voice 'alloy'"),
        ({"input": TEXT, "voice": -1}, 400, "voice", "unknown voice -1"),
        ({"input": TEXT, "response_format": "aac"}, 400, "response_format", "'aac' is not one of"),
        ({"input": TEXT, "speed": 1.5}, 400, "speed", "only 1.0"),
        ({"input": TEXT, "stream_format": "sse"}, 400, "stream_format", "no server-sent events"),
        ({"input": TEXT, "instructions": "whisper"}, 400, "instructions", "not supported"),
        ({"input": TEXT, "temperature": -1}, 400, "temperature", "a number >= 0"),
        ({"input": TEXT, "topk": 2.5}, 400, "topk", "an integer >= 1"),
        ({"input": TEXT, "max_audio_ms": 10}, 400, "max_audio_ms", ">= 80"),
        ({"input": TEXT, "split_sentences": "no"}, 400, "split_sentences", "true or false"),
        ({"input": TEXT, "pitch": 2}, 400, "pitch", "unknown field(s) pitch"),
        ({"input": "word " * 800, "max_audio_ms": 150_000, "split_sentences": False}, 400, "input", "prompt frames but at most"),
    ],
)
def test_bad_requests_get_json_errors(server, body, status, param, message):
    got, headers, data = post(server, body)
    assert got == status and headers["Content-Type"] == "application/json"
    error = json.loads(data)["error"]
    assert message in error["message"] and error["param"] == param and error["type"] == "invalid_request_error"


def test_endpoints_methods_and_body_limits(server):
    conn = connect(server)
    conn.request("GET", "/health")
    resp = conn.getresponse()
    health = json.loads(resp.read())
    assert resp.status == 200
    assert health == {"status": "ok", "busy": False, "waiting": 0, "sample_rate": 24000, "backend": "cpu"}
    conn.request("GET", "/v1/voices")
    voices = json.loads(conn.getresponse().read())["voices"]
    assert voices == [{"name": "narrator", "speaker": 1, "context_turns": 1}]
    conn.request("GET", "/v1/models")
    assert json.loads(conn.getresponse().read())["data"][0]["id"] == "csm-1b"
    conn.request("GET", "/v1/audio/speech")
    resp = conn.getresponse()
    assert resp.status == 405 and resp.getheader("Allow") == "POST" and b"use POST" in resp.read()
    conn.request("GET", "/nothing")
    resp = conn.getresponse()
    assert resp.status == 404 and json.loads(resp.read())["error"]["type"] == "not_found"
    status, headers, _ = post(server, {"input": TEXT}, path="/health")
    assert status == 405 and headers["Allow"] == "GET"
    for head, status, message in (
        (b"Content-Length: 1048577", b"413", b"at most 1048576"),
        (b"Transfer-Encoding: chunked", b"411", b"Content-Length header"),
        (b"Content-Length: lots", b"400", b"bad Content-Length"),
    ):
        raw = socket.create_connection(server.server_address[:2], timeout=30)
        raw.sendall(b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\n%s\r\n\r\n" % head)
        reply = b"".join(iter(functools.partial(raw.recv, 4096), b""))  # body unread: the server closes
        raw.close()
        assert reply.startswith(b"HTTP/1.1 %s " % status) and message in reply


def test_concurrent_requests_are_served_one_at_a_time(server, tts):
    results = [None] * 3

    def ask(i):
        results[i] = post(server, {"input": TEXT, "response_format": "pcm"})

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    want = expected_pcm(tts)
    assert [(r[0], same_pcm(r[2], want)) for r in results] == [(200, True)] * 3


def test_a_client_leaving_mid_stream_frees_the_model(server, tts, caplog):
    caplog.set_level("INFO", logger="csm_app.server")
    raw = socket.create_connection(server.server_address[:2], timeout=30)
    body = json.dumps({"input": TEXT, "response_format": "pcm", "max_audio_ms": 60_000}).encode()
    raw.sendall(b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    assert b"200 OK" in raw.recv(64)
    raw.close()  # 750 frames were asked for; the server notices the closed socket and stops
    status, _, data = post(server, {"input": TEXT, "response_format": "pcm"})
    assert status == 200
    assert_same_pcm(data, expected_pcm(tts))
    assert "the client went away; its audio is no longer generated" in caplog.text


def test_csm_serve_command(tiny_model, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    try:
        socket.create_server(("127.0.0.1", 0)).close()
    except OSError as e:
        pytest.skip(f"cannot listen on a local TCP port here: {e}")
    sf.write(str(tmp_path / "voice.wav"), np.sin(np.arange(12_000) * 0.05).astype(np.float32) * 0.3, 16_000)
    voice = tmp_path / "voice.jsonl"
    voice.write_text(json.dumps({"speaker": 1, "text": VOICE_TEXT, "audio": "voice.wav"}) + "\n")
    script = Path(sys.executable).with_name("csm")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "csm_app.cli"]
    proc = subprocess.Popen(
        cmd + ["serve", "--model", str(tiny_model), "--port", "0", "--voice", f"narrator={voice}", "--temperature", "0",
               "--max-audio-ms", "400", "--no-watermark", "--threads", "1"],
        stderr=subprocess.PIPE, env={**os.environ, "CSM_NUM_THREADS": "1"}, text=True,
    )  # fmt: skip
    try:
        seen = []
        for line in proc.stderr:  # warnings may come first; EOF if the server died
            seen.append(line)
            if "csm: serving on http://127.0.0.1:" in line:
                break
        else:
            pytest.fail("csm serve exited before serving:\n" + "".join(seen))
        port = int(line.split("127.0.0.1:")[1].split()[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", "/v1/voices")
        assert json.loads(conn.getresponse().read())["voices"] == [{"name": "narrator", "speaker": 1, "context_turns": 1}]
        conn.request("POST", "/v1/audio/speech", body=json.dumps({"input": TEXT, "voice": "narrator", "response_format": "pcm"}))
        resp = conn.getresponse()
        assert resp.status == 200 and len(resp.read()) == 2 * 5 * 1920  # the command's --max-audio-ms
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.parametrize(
    "voice, message",
    [
        ("narrator", "expected NAME=CONTEXT.jsonl"),
        ("3={jsonl}", "digits name speaker ids"),
        ("a={missing}", "cannot read it"),
        ("a={bad}", "bad.jsonl:1: expected a JSON object with 'text'"),
        ("a={empty}", "has no turns"),
        ("a={silent}", "has a turn without 'audio'"),
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


def test_a_failure_mid_generation_is_a_500_or_a_cut_stream(server, monkeypatch):
    def failing(*args, **kwargs):
        yield np.zeros(1920, np.float32)
        raise RuntimeError("the backend fell over")

    monkeypatch.setattr(server.RequestHandlerClass.service.tts, "stream", failing)
    status, _, data = post(server, {"input": TEXT, "response_format": "flac"})
    error = json.loads(data)["error"]
    assert status == 500 and error["type"] == "server_error" and "the backend fell over" in error["message"]
    conn = connect(server)
    conn.request("POST", "/v1/audio/speech", body=json.dumps({"input": TEXT, "response_format": "pcm"}))
    resp = conn.getresponse()
    assert resp.status == 200
    with pytest.raises(http.client.IncompleteRead):  # no closing chunk: the client knows it was cut
        resp.read()
    monkeypatch.undo()
    status, _, _ = post(server, {"input": TEXT, "response_format": "pcm"})
    assert status == 200


def test_requests_beyond_the_waiting_limit_get_503(server, monkeypatch):
    """One request generating (held on an event), max_waiting=1 waiting: the next is refused."""
    from csm_app.speech_service import END

    service = server.RequestHandlerClass.service
    release, started = threading.Event(), threading.Event()

    def held(job):
        started.set()
        release.wait(60)
        job.out.put(np.zeros(1920, np.float32))
        job.out.put(END)

    monkeypatch.setattr(service, "_run_one", held)
    monkeypatch.setattr(service, "max_waiting", 1)
    monkeypatch.setattr(service, "max_batch", 1)
    results = {}

    def ask(name):
        results[name] = post(server, {"input": TEXT, "response_format": "pcm"})

    first = threading.Thread(target=ask, args=("first",))
    first.start()
    assert started.wait(30)
    second = threading.Thread(target=ask, args=("second",))
    second.start()
    for _ in range(3000):  # until the second request waits its turn
        if service.waiting == 1:
            break
        threading.Event().wait(0.01)
    conn = connect(server)
    conn.request("GET", "/health")
    health = json.loads(conn.getresponse().read())
    assert health["waiting"] == 1 and health["busy"] is True
    status, headers, data = post(server, {"input": TEXT})
    assert status == 503 and headers["Retry-After"] == "5" and json.loads(data)["error"]["type"] == "server_busy"
    release.set()
    first.join(60)
    second.join(60)
    assert results["first"][0] == results["second"][0] == 200 and len(results["second"][2]) == 2 * 1920
    assert service.waiting == 0


def paused_server(tts, voices=()):
    """A server whose model worker has not started: requests queue until service.start()."""
    from csm_app.server import SpeechService, make_server

    service = SpeechService(tts, voices, defaults={"temperature": 0, "max_audio_ms": 800}, chunk_frames=4, start=False)
    srv = make_server(service, "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, service


def wait_for(condition, seconds: float = 30.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        threading.Event().wait(0.01)
    raise AssertionError("timed out waiting")


def test_waiting_requests_that_can_share_a_batch_are_generated_together(tts, voice_clip):
    """Requests queued while the model is busy go through as one batch; each gets what it would
    alone (greedy), streamed as its own row's frames are decoded."""
    from csm_app import Segment
    from csm_app.server import Voice

    narrator = Voice("narrator", 1, tuple(tts.encode_context([Segment(1, VOICE_TEXT, audio=voice_clip)])))
    srv, service = paused_server(tts, [narrator])
    bodies = [
        {"input": TEXT, "response_format": "pcm"},
        {"input": "Another line, said by one", "voice": "1", "response_format": "pcm", "max_audio_ms": 480},
        {"input": "Said in the narrator's voice", "voice": "narrator", "response_format": "wav"},
        {"input": "One sentence. Then a second one.", "response_format": "pcm"},  # two sentences: alone
        {"input": "A seeded one", "response_format": "pcm", "seed": 3},  # a seed: alone
        {"input": "Shorter again", "voice": "1", "response_format": "pcm", "max_audio_ms": 480},
    ]
    results = [None] * len(bodies)

    def ask(i):
        results[i] = post(srv, bodies[i])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(bodies))]
    try:
        for i, t in enumerate(threads):
            t.start()
            wait_for(lambda: service.waiting == i + 1)  # queue them in this order
        service.start()
        for t in threads:
            t.join(120)
    finally:
        srv.shutdown()
        srv.server_close()
        service.close()
    # arrival order, joined by options: [0, 2] (defaults), [1, 5] (480 ms), then 3 and 4 alone
    assert service.batch_sizes == [2, 2, 1, 1]
    assert all(r[0] == 200 for r in results)
    narrator_ctx = [Segment(1, VOICE_TEXT, audio=voice_clip)]
    assert_same_pcm(results[0][2], expected_pcm(tts))
    assert_same_pcm(results[2][2][44:], expected_pcm(tts, "Said in the narrator's voice", 1, narrator_ctx))
    for i in (1, 5):
        want = tts.stream(bodies[i]["input"], 1, temperature=0, max_audio_ms=480, chunk_frames=4)
        from csm_app.audio_io import pcm16

        assert_same_pcm(results[i][2], pcm16(np.concatenate(list(want))))
    assert len(results[3][2]) > 0 and len(results[4][2]) == 2 * 10 * 1920


def test_a_client_leaving_a_batch_leaves_the_others_served(tts, caplog):
    caplog.set_level("INFO", logger="csm_app.server")
    srv, service = paused_server(tts)
    body = json.dumps({"input": TEXT, "response_format": "pcm", "max_audio_ms": 60_000}).encode()
    leaving = socket.create_connection(srv.server_address[:2], timeout=30)
    leaving.sendall(b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    wait_for(lambda: service.waiting == 1)
    result = {}
    staying = threading.Thread(target=lambda: result.setdefault("r", post(srv, {"input": "Another line", "max_audio_ms": 60_000,
                                                                               "response_format": "pcm"})))
    staying.start()
    wait_for(lambda: service.waiting == 2)
    try:
        service.start()
        assert b"200 OK" in leaving.recv(64)
        leaving.close()  # 750 frames asked for: the batch goes on for the other request
        staying.join(300)
    finally:
        srv.shutdown()
        srv.server_close()
        service.close()
    assert service.batch_sizes == [2] and result["r"][0] == 200 and len(result["r"][2]) == 2 * 750 * 1920
    assert "the client went away; its audio is no longer generated" in caplog.text
