"""`csm serve` (csm_app.server on uvicorn, csm_app.speech_service on the scheduler) with a tiny random
model: a real server on a free loopback port, driven by the official openai client, httpx and raw
sockets. Streamed audio equals what the facade generates alone (greedy); every format decodes;
voices survive a restart; bad input gets OpenAI-shaped errors naming the field."""

from __future__ import annotations

import base64
import io
import json
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from server_helpers import TEXT, VOICE_TEXT, Served, assert_same_pcm, make_service, pcm_of, post_raw, raw_request
from server_helpers import read_all, same_pcm, wait_for

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


@pytest.fixture(scope="module")
def tts(tiny_model):
    """The reference: the facade alone (its own model instance; the server owns another)."""
    from csm_app import CSM

    return CSM.load(tiny_model, threads=1, watermark=False)


@pytest.fixture(scope="module")
def voice_clip(tts):
    return tts.generate(VOICE_TEXT, speaker=1, temperature=0, max_audio_ms=400)


@pytest.fixture(scope="module")
def narrator(tts, voice_clip):
    from csm_app import Segment
    from csm_app.voices import Voice

    return Voice("narrator", 1, tuple(tts.encode_context([Segment(1, VOICE_TEXT, audio=voice_clip)])))


@pytest.fixture(scope="module")
def served(tiny_model, narrator, tmp_path_factory):
    service = make_service(tiny_model, [narrator], slots=2, max_waiting=4, max_audio_ms_limit=120_000,
                           data_dir=tmp_path_factory.mktemp("data"))
    srv = Served(service)
    yield srv
    srv.stop()


@pytest.fixture
def client(served):
    with httpx.Client(base_url=served.url, timeout=120) as c:
        yield c


def expected(tts, text=TEXT, speaker=0, context=(), **options) -> bytes:
    options = {"temperature": 0, "max_audio_ms": 800, **options}
    return pcm_of(tts.generate(text, speaker, context, **options))


def speak(client, **body):
    return client.post("/v1/audio/speech", json={"input": TEXT, **body})


# ---- the speech endpoint ----
def test_openai_client_streams_pcm_equal_to_generate(served, tts):
    openai = pytest.importorskip("openai")
    api = openai.OpenAI(base_url=served.url + "/v1", api_key="unused", max_retries=0)
    pieces = []
    with api.audio.speech.with_streaming_response.create(model="tts-1", voice="0", input=TEXT, response_format="pcm") as r:
        assert r.headers["content-type"] == "audio/pcm" and r.headers["transfer-encoding"] == "chunked"
        assert r.headers["x-sample-rate"] == "24000"
        for piece in r.iter_bytes():
            pieces.append(piece)
    assert_same_pcm(b"".join(pieces), expected(tts))
    with api.audio.speech.with_streaming_response.create(
        model="tts-1", voice="narrator", input=TEXT, response_format="wav", extra_body={"max_audio_ms": 480}
    ) as r:
        wav = r.read()
    assert wav[:4] == b"RIFF" and wav[8:12] == b"WAVE"
    from csm_app import Segment

    ctx = [Segment(1, VOICE_TEXT, codes=served.service.voices.get("narrator").context[0].codes)]
    assert_same_pcm(wav[44:], expected(tts, speaker=1, context=ctx, max_audio_ms=480))


def test_streamed_chunks_arrive_before_the_end(served):
    """pcm comes as frames are decoded: the first bytes arrive while later frames are still being made."""
    body = json.dumps({"input": TEXT, "response_format": "pcm", "max_audio_ms": 8000}).encode()
    with httpx.Client(base_url=served.url, timeout=60) as c:
        with c.stream("POST", "/v1/audio/speech", content=body) as r:
            it = r.iter_raw()
            first = next(it)
            steps_at_first = served.service.scheduler.steps
            total = len(first) + sum(len(p) for p in it)
    assert 0 < len(first) < total and served.service.scheduler.steps > steps_at_first


def test_sse_events_decode_to_the_same_audio(client, tts):
    r = speak(client, response_format="pcm", stream_format="sse")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in events[:-1]] == ["speech.audio.delta"] * (len(events) - 1) and len(events) > 2
    done = events[-1]
    assert done["type"] == "speech.audio.done"
    audio = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    assert_same_pcm(audio, expected(tts))
    usage = done["usage"]
    assert usage["output_tokens"] == len(audio) // 2 // 1920 and usage["input_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


@pytest.mark.parametrize("fmt", ["mp3", "opus", "flac", "wav", "aac"])
def test_every_format_decodes(client, tts, fmt):
    from csm_app.audio_io import FormatUnavailable, check_response_format

    try:
        check_response_format(fmt)
    except FormatUnavailable as e:
        r = speak(client, response_format=fmt)
        assert r.status_code == 400 and r.json()["error"]["param"] == "response_format"
        pytest.skip(str(e))
    r = speak(client, response_format=fmt)
    assert r.status_code == 200, r.text
    want = np.frombuffer(expected(tts), "<i2").astype(np.float32) / 32767
    if fmt == "aac":
        av = pytest.importorskip("av")
        with av.open(io.BytesIO(r.content)) as f:
            audio = np.concatenate([fr.to_ndarray().reshape(-1) for fr in f.decode(audio=0)])
            rate = f.streams.audio[0].rate
        assert rate == 24_000 and abs(audio.size - want.size) <= 2048  # the encoder's priming and padding
        return
    audio, rate = sf.read(io.BytesIO(r.content), dtype="float32")
    assert rate == 24_000
    if fmt in ("wav", "flac"):  # lossless: the same samples
        assert audio.shape == want.shape and np.abs(audio - want).max() <= 2 / 32767
    else:  # lossy, with the encoder's delay: the length and the loudness match
        assert abs(audio.size - want.size) <= 4096
        assert abs(np.sqrt(np.mean(audio**2)) - np.sqrt(np.mean(want**2))) < 0.5 * np.sqrt(np.mean(want**2)) + 1e-4


def test_aac_without_pyav_is_a_400_saying_what_enables_it(client, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "av" else real(name, *a))
    r = speak(client, response_format="aac")
    error = r.json()["error"]
    assert r.status_code == 400 and error["param"] == "response_format"
    assert "'aac'" in error["message"] and "pip install av" in error["message"]


def test_concurrent_requests_each_get_what_they_would_alone(served, tts):
    """Requests joining the running batch at different frames, with their own options and seeds."""
    bodies = [
        {"input": TEXT, "response_format": "pcm"},
        {"input": "Another line, said by one", "voice": "1", "response_format": "pcm", "max_audio_ms": 480},
        {"input": "A seeded one", "response_format": "pcm", "temperature": 0.9, "seed": 3},
        {"input": "One sentence. Then a second one.", "voice": {"id": "1"}, "response_format": "pcm"},
    ]
    results = [None] * len(bodies)

    def ask(i):
        with httpx.Client(base_url=served.url, timeout=120) as c:
            results[i] = c.post("/v1/audio/speech", json=bodies[i])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join(180)
    assert [r.status_code for r in results] == [200] * 4
    assert_same_pcm(results[0].content, expected(tts))
    assert_same_pcm(results[1].content, expected(tts, "Another line, said by one", 1, max_audio_ms=480))
    assert_same_pcm(results[2].content, expected(tts, "A seeded one", temperature=0.9, seed=3))
    assert_same_pcm(results[3].content, expected(tts, "One sentence. Then a second one.", 1))


# ---- errors ----
@pytest.mark.parametrize(
    "body, param, message",
    [
        (b"{not json", None, "not a JSON object"),
        (b"[1, 2]", None, "not a JSON object"),
        ({"voice": "0"}, "input", "'input' is required"),
        ({"input": ""}, "input", "at least 1 character"),
        ({"input": "x" * 4097}, "input", "at most 4096 characters"),
        ({"input": TEXT, "voice": "alloy"}, "voice", "unknown voice 'alloy'"),
        ({"input": TEXT, "voice": -1}, "voice", "unknown voice -1"),
        ({"input": TEXT, "voice": [1]}, "voice", "voice must be a string, a speaker id or"),
        ({"input": TEXT, "response_format": "ogg"}, "response_format", "'mp3', 'opus', 'aac', 'flac', 'wav' or 'pcm'"),
        ({"input": TEXT, "speed": 1.5}, "speed", "speed=1.5 is not supported"),
        ({"input": TEXT, "speed": 9}, "speed", "less than or equal to 4"),
        ({"input": TEXT, "stream_format": "chunks"}, "stream_format", "'audio' or 'sse'"),
        ({"input": TEXT, "temperature": -1}, "temperature", "greater than or equal to 0"),
        ({"input": TEXT, "temperature": "hot"}, "temperature", "valid number"),
        ({"input": TEXT, "topk": 2.5}, "topk", "valid integer"),
        ({"input": TEXT, "topk": 0}, "topk", "greater than or equal to 1"),
        ({"input": TEXT, "seed": -3}, "seed", "greater than or equal to 0"),
        ({"input": TEXT, "max_audio_ms": 10}, "max_audio_ms", "shorter than one 80 ms frame"),
        ({"input": TEXT, "max_audio_ms": 200_000}, "max_audio_ms", "above this server's limit of 120000 ms"),
        ({"input": TEXT, "split_sentences": "no"}, "split_sentences", "valid boolean"),
        ({"input": TEXT, "pitch": 2}, "pitch", "unknown field 'pitch'"),
        ({"input": "word " * 800, "max_audio_ms": 100_000, "split_sentences": False}, "input", "prompt frames but at most"),
    ],
)
def test_bad_requests_get_openai_error_bodies(client, body, param, message):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = client.post("/v1/audio/speech", content=data, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.headers["content-type"] == "application/json"
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert message in error["message"] and error["param"] == param and error["type"] == "invalid_request_error"


def test_instructions_are_accepted_and_ignored(client, tts):
    r = speak(client, response_format="pcm", instructions="Speak like a pirate")
    assert r.status_code == 200
    assert_same_pcm(r.content, expected(tts))


def test_routes_methods_and_body_limits(served, client):
    assert client.get("/health").json()["status"] == "ok"
    assert client.get("/health/ready").json() == {"ready": True}
    assert client.get("/v1/models").json()["data"][0]["id"] == "csm-1b"
    r = client.get("/v1/audio/speech")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    r = client.get("/nothing")
    assert r.status_code == 404 and "no such endpoint '/nothing'" in r.json()["error"]["message"]
    schema = client.get("/openapi.json").json()["components"]["schemas"]["SpeechRequest"]["properties"]
    for name in ("temperature", "topk", "seed", "max_audio_ms", "split_sentences", "stream_format", "instructions"):
        assert schema[name]["description"]
    components = client.get("/openapi.json").json()["components"]["schemas"]
    assert set(components["VoiceCreate"]["properties"]) == {"name", "turns", "speaker"} and "VoiceTurn" in components
    for head, status, message in (
        (b"Content-Length: 1048577\r\n", b"413", b"at most 1048576"),
        (b"Content-Length: lots\r\n", b"400", b"Invalid HTTP request"),  # uvicorn's parser answers this one
    ):
        raw = raw_request(served.port, b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\n%s\r\n" % head)
        reply = read_all(raw)  # the body is never read: the server answers and closes
        raw.close()
        assert reply.startswith(b"HTTP/1.1 " + status) and message in reply, reply[:300]
    # a chunked body with no length is counted as it arrives
    big = b'{"input": "' + b"x" * (1 << 20) + b'"}'
    r = client.post("/v1/audio/speech", content=iter([big[:1000], big[1000:]]), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


def test_waiting_queue_full_is_503_with_retry_after(tiny_model):
    service = make_service(tiny_model, slots=1, max_waiting=1)
    srv = Served(service)
    hold = threading.Event()
    try:
        service._call(lambda: hold.wait(60))  # the model's thread is busy: nothing is admitted
        waiting = {}

        def ask():
            with httpx.Client(base_url=srv.url, timeout=120) as c:
                waiting["r"] = c.post("/v1/audio/speech", json={"input": TEXT, "response_format": "pcm"})

        t = threading.Thread(target=ask)
        t.start()
        wait_for(lambda: service.waiting == 1, what="the first request to wait")
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            r = c.post("/v1/audio/speech", json={"input": TEXT})
            assert r.status_code == 503 and r.headers["retry-after"] == "5"
            assert r.json()["error"]["code"] == "server_busy" and r.json()["error"]["type"] == "server_error"
            metrics = c.get("/metrics").text
        assert "csm_streams_waiting 1.0" in metrics
        hold.set()
        t.join(120)
        assert waiting["r"].status_code == 200 and len(waiting["r"].content) == 2 * 10 * 1920
    finally:
        hold.set()
        srv.stop()


def test_metrics_count_requests_frames_and_time_to_first_audio(client):
    before = client.get("/metrics").text
    assert speak(client, response_format="pcm").status_code == 200
    assert speak(client, topk=0).status_code == 400
    text = client.get("/metrics").text

    def value(name, metrics_text):
        for line in metrics_text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{") and line.split(" ")[0] == name:
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    ok = 'csm_requests_total{route="/v1/audio/speech",status="200"}'
    bad = 'csm_requests_total{route="/v1/audio/speech",status="400"}'
    assert value(ok, text) == value(ok, before) + 1 and value(bad, text) == value(bad, before) + 1
    assert value("csm_frames_generated_total", text) >= value("csm_frames_generated_total", before) + 10
    assert value("csm_time_to_first_audio_seconds_count", text) == value("csm_time_to_first_audio_seconds_count", before) + 1
    assert value("csm_frames_per_second", text) > 0
    for name in ("csm_streams_running", "csm_streams_waiting", "csm_ready 1.0"):
        assert name in text


# ---- clients that leave, failures ----
def test_a_client_leaving_mid_stream_frees_its_slot_within_one_frame(served, client, tts):
    service = served.service
    done_before = dict(service.finished)
    body = json.dumps({"input": TEXT, "response_format": "pcm", "max_audio_ms": 60_000}).encode()
    sock = post_raw(served.port, "/v1/audio/speech", body)
    assert b"200 OK" in sock.recv(4096)
    sock.close()  # 750 frames were asked for; the server notices the closed socket and cancels
    wait_for(lambda: service.finished["cancelled"] == done_before["cancelled"] + 1, 30, "the stream to be cancelled")
    assert service.freed_after_steps[-1] <= 1
    assert service.running == 0
    r = speak(client, response_format="pcm")
    assert_same_pcm(r.content, expected(tts))


def test_a_client_leaving_while_it_waits_is_never_generated(tiny_model):
    service = make_service(tiny_model, slots=1, max_waiting=2)
    srv = Served(service)
    hold = threading.Event()
    try:
        service._call(lambda: hold.wait(60))
        sock = post_raw(srv.port, "/v1/audio/speech", json.dumps({"input": TEXT, "response_format": "pcm"}).encode())
        wait_for(lambda: service.waiting == 1, what="the request to wait")
        (stream,) = service._streams
        sock.close()
        wait_for(lambda: stream.job._cancel, 30, "the request to be cancelled")  # by the event loop, at once
        hold.set()  # the model's thread goes on: the cancelled request leaves the queue, never admitted
        wait_for(lambda: service.finished["cancelled"] == 1, 30, "the waiting request to go")
        assert service.waiting == 0 and service.running == 0 and service.frames_total == 0
    finally:
        hold.set()
        srv.stop()


def test_a_failure_mid_generation_is_a_500_or_a_cut_stream(tiny_model, monkeypatch):
    service = make_service(tiny_model, slots=1)
    srv = Served(service)
    model = service.scheduler.model
    real_step, calls = model.step, {"n": 0}

    def failing(feeds):
        calls["n"] += 1
        if calls["n"] > 8:
            raise RuntimeError("the backend fell over")
        return real_step(feeds)

    monkeypatch.setattr(model, "step", failing)
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            r = c.post("/v1/audio/speech", json={"input": TEXT, "response_format": "flac"})
            error = r.json()["error"]
            assert r.status_code == 500 and error["type"] == "server_error" and "the backend fell over" in error["message"]
            calls["n"] = 0
            with pytest.raises(httpx.RemoteProtocolError):  # no closing chunk: the client knows it was cut
                c.post("/v1/audio/speech", json={"input": TEXT, "response_format": "pcm"})
            calls["n"] = 0
            r = c.post("/v1/audio/speech", json={"input": TEXT, "response_format": "pcm", "stream_format": "sse"})
            events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
            assert events[-1]["type"] == "error" and "the backend fell over" in events[-1]["error"]["message"]
            monkeypatch.undo()
            assert c.post("/v1/audio/speech", json={"input": TEXT, "response_format": "pcm"}).status_code == 200
            assert c.get("/health/ready").json() == {"ready": True}
    finally:
        srv.stop()


# ---- keys ----
def test_an_api_key_guards_every_route_but_health(tiny_model):
    srv = Served(make_service(tiny_model), api_key="s3cret")
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            for method, path in (("POST", "/v1/audio/speech"), ("GET", "/v1/audio/voices"), ("GET", "/metrics"),
                                 ("GET", "/v1/models"), ("DELETE", "/v1/audio/voices/x"), ("GET", "/openapi.json")):
                r = c.request(method, path, json={"input": TEXT})
                assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", path
                assert "no API key given" in r.json()["error"]["message"]
            r = c.get("/v1/models", headers={"Authorization": "Bearer wrong"})
            assert r.status_code == 401 and "the API key is wrong" in r.json()["error"]["message"]
            assert c.get("/health").status_code == 200 and c.get("/health/ready").status_code == 200
            assert c.get("/").status_code == 200  # the page itself holds nothing; it asks for the key
        openai = pytest.importorskip("openai")
        api = openai.OpenAI(base_url=srv.url + "/v1", api_key="s3cret", max_retries=0)
        with api.audio.speech.with_streaming_response.create(model="tts-1", voice="1", input=TEXT, response_format="pcm") as r:
            assert len(r.read()) == 2 * 10 * 1920
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=srv.url + "/v1", api_key="nope", max_retries=0).audio.speech.create(
                model="tts-1", voice="1", input=TEXT)
    finally:
        srv.stop()


# ---- voices ----
def _wav_bytes(audio: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, 24_000, format="WAV", subtype="FLOAT")  # float: the server reads back the same samples
    return buf.getvalue()


def test_voices_round_trip_across_a_restart(tiny_model, tts, voice_clip, narrator, tmp_path):
    from csm_app import Segment

    want = expected(tts, speaker=1, context=[Segment(1, VOICE_TEXT, audio=voice_clip)])
    srv = Served(make_service(tiny_model, [narrator], data_dir=tmp_path))
    try:
        with httpx.Client(base_url=srv.url, timeout=120) as c:
            r = c.post("/v1/audio/voices", data={"name": "ann", "text": VOICE_TEXT, "speaker": "1"},
                       files={"audio": ("ann.wav", _wav_bytes(voice_clip), "audio/wav")})
            assert r.status_code == 201, r.text
            assert r.json()["id"] == "ann" and r.json()["speaker"] == 1 and r.json()["context_turns"] == 1
            turns = [{"text": "First turn", "audio": base64.b64encode(_wav_bytes(voice_clip[:9600])).decode(), "speaker": 0},
                     {"text": VOICE_TEXT, "audio": base64.b64encode(_wav_bytes(voice_clip)).decode(), "speaker": 1}]
            r = c.post("/v1/audio/voices", json={"name": "duo", "turns": turns})
            assert r.status_code == 201 and r.json()["context_turns"] == 2 and r.json()["speaker"] == 1
            r = c.post("/v1/audio/voices", json={"name": "ann", "turns": turns})
            assert r.status_code == 409 and r.json()["error"]["param"] == "name"
            names = {v["id"]: v["source"] for v in c.get("/v1/audio/voices").json()["data"]}
            assert names == {"ann": "api", "duo": "api", "narrator": "cli"}
            first = c.post("/v1/audio/speech", json={"input": TEXT, "voice": "ann", "response_format": "pcm"}).content
        assert_same_pcm(first, want)
    finally:
        srv.stop()
    assert sorted(p.name for p in (tmp_path / "voices").iterdir()) == ["ann.npz", "duo.npz"]
    srv = Served(make_service(tiny_model, data_dir=tmp_path))  # a new process would read the same files
    try:
        with httpx.Client(base_url=srv.url, timeout=120) as c:
            assert {v["id"] for v in c.get("/v1/audio/voices").json()["data"]} == {"ann", "duo"}
            again = c.post("/v1/audio/speech", json={"input": TEXT, "voice": {"id": "ann"}, "response_format": "pcm"}).content
            assert_same_pcm(again, want)
            duo = c.post("/v1/audio/speech", json={"input": TEXT, "voice": "duo", "response_format": "pcm"}).content
            assert not same_pcm(duo, want)
            r = c.delete("/v1/audio/voices/ann")
            assert r.status_code == 200 and r.json() == {"id": "ann", "object": "voice", "deleted": True}
            assert c.delete("/v1/audio/voices/ann").status_code == 404
            r = c.post("/v1/audio/speech", json={"input": TEXT, "voice": "ann"})
            assert r.status_code == 400 and r.json()["error"]["param"] == "voice"
    finally:
        srv.stop()
    assert [p.name for p in (tmp_path / "voices").iterdir()] == ["duo.npz"]


@pytest.mark.parametrize(
    "form, files, status, param, message",
    [
        ({"text": "hi"}, True, 400, "name", "'name' is required"),
        ({"name": "9lives", "text": "hi"}, True, 400, "name", "must start with a letter"),
        ({"name": "a/b", "text": "hi"}, True, 400, "name", "must start with a letter"),
        ({"name": "narrator", "text": "hi"}, True, 409, "name", "exists already"),
        ({"name": "ok"}, True, 400, "text", "'text' is required"),
        ({"name": "ok", "text": "hi"}, False, 400, "audio", "'audio' is required"),
        ({"name": "ok", "text": "hi", "speaker": "x"}, True, 400, "speaker", "integer >= 0"),
        ({"name": "ok", "text": "hi"}, "junk", 400, "audio", "cannot decode audio"),
    ],
)
def test_bad_voice_uploads(served, client, voice_clip, form, files, status, param, message):
    upload = {"audio": ("v.wav", b"not audio at all" if files == "junk" else _wav_bytes(voice_clip[:4800]), "audio/wav")}
    r = client.post("/v1/audio/voices", data=form, files=upload if files else None)
    if not files:
        r = client.post("/v1/audio/voices", data=form, files={"other": ("x", b"x")})
    assert r.status_code == status and r.json()["error"]["param"] == param and message in r.json()["error"]["message"]


def test_bad_voice_json(client):
    r = client.post("/v1/audio/voices", json={"name": "x", "turns": [{"text": "hi", "audio": "@@@"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "turns.0.audio"
    r = client.post("/v1/audio/voices", json={"name": "x", "turns": []})
    assert r.status_code == 400 and r.json()["error"]["param"] == "turns"
    r = client.delete("/v1/audio/voices/narrator")
    assert r.status_code == 409 and "command line" in r.json()["error"]["message"]
    buf = io.BytesIO()
    sf.write(buf, np.zeros(61 * 24_000, np.float32), 24_000, format="WAV", subtype="PCM_16")
    r = client.post("/v1/audio/voices", json={"name": "long", "turns": [{"text": "hi", "audio": base64.b64encode(buf.getvalue()).decode()}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "audio" and "lasts 61.0 s; at most 60 s" in r.json()["error"]["message"]


def test_watermark_is_continuous_across_streamed_chunks(tiny_model):
    service = make_service(tiny_model, watermark=True, defaults=None)
    srv = Served(service)
    try:
        with httpx.Client(base_url=srv.url, timeout=120) as c:
            r = c.post("/v1/audio/speech", json={"input": TEXT, "response_format": "wav", "temperature": 0,
                                                 "max_audio_ms": 2400})  # fmt: skip
        audio, rate = sf.read(io.BytesIO(r.content), dtype="float32")
        assert audio.size == 30 * 1920
        assert service.tts.watermarker.detect(audio, rate).found
    finally:
        srv.stop()


def test_closing_the_service_ends_every_stream(tiny_model):
    """The model side alone (no HTTP): a consumer waiting on a stream is told when the service stops."""
    import asyncio

    from csm_app.speech_service import GenerationFailed, ServiceClosed

    service = make_service(tiny_model, slots=1).start()
    hold = threading.Event()
    service._call(lambda: hold.wait(60))
    service.cancel_all = lambda: None  # as if close() came in the middle of a step, after its cancel check

    async def main():
        stream = service.open(TEXT, service.voice("0"), service.options({}))
        closer = threading.Thread(target=service.close)
        closer.start()
        await asyncio.sleep(0.1)
        hold.set()
        with pytest.raises(GenerationFailed, match="shut down before this request ended"):
            async for _ in stream:
                pass
        closer.join(30)
        with pytest.raises(ServiceClosed):
            service.open(TEXT, service.voice("0"), service.options({}))

    asyncio.run(main())
    assert not service.ready
