"""`csm serve` with a whole-clip watermark (SilentCipher): a streamed request is marked once it has
ended and comes as one chunk. A real server on a loopback port with random SilentCipher networks
of the exact architecture (tests/audio/silentcipher_helpers.py): the streamed pcm, wav and SSE audio
equal `CSM.generate` plus SilentCipher's embed of the whole clip; with a planted encoder/decoder
pair the served audio verifies; a client that leaves before the end costs no embed."""

from __future__ import annotations

import base64
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from server_helpers import TEXT, Served, assert_same_pcm, make_service, pcm_of, post_raw, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "audio"))
from silentcipher_helpers import PLANTED_BINS, TINY, planted_classes, random_model  # noqa: E402

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

MS = 800  # 10 frames: under SilentCipher's one-message length, marked anyway (allow_short)
LONG_MS = 2560  # 32 frames, 2.56 s: two whole messages for the planted verify


@pytest.fixture(scope="module")
def tts(tiny_model):
    """The reference: the facade alone, unmarked (the embed is applied by the test)."""
    from csm_app import CSM

    return CSM.load(tiny_model, threads=1, watermark=False)


def served_with(tiny_model, model, **options):
    """A server whose facade chose SilentCipher (`--watermark silentcipher`) with `model` as the
    weights found; the marker's embed calls are counted in `served.embeds`."""
    from csm_app import watermarks

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(watermarks, "_silentcipher", lambda path=None: (model, "/fake/silentcipher"))
        service = make_service(tiny_model, watermark="silentcipher", **options)
    marker = service.tts.watermarker
    assert type(marker).__name__ == "SilentCipherWatermarker" and marker.whole_clip
    srv = Served(service)
    srv.embeds = []
    embed = marker.embed

    def counted(audio, sample_rate, start_sample=0):
        srv.embeds.append((audio.size, start_sample))
        return embed(audio, sample_rate, start_sample)

    marker.embed = counted
    return srv


@pytest.fixture(scope="module")
def tiny_sc():
    return random_model(TINY, seed=0)


@pytest.fixture(scope="module")
def served(tiny_model, tiny_sc):
    srv = served_with(tiny_model, tiny_sc, slots=2, max_waiting=4)
    yield srv
    srv.stop()


def expected(tts, model, text=TEXT, speaker=0, **options) -> bytes:
    """CSM.generate (unmarked), then SilentCipher's embed of the whole clip."""
    from csm_audio.watermark import silentcipher as sc

    audio = tts.generate(text, speaker, temperature=0, max_audio_ms=options.pop("max_audio_ms", MS), **options)
    return pcm_of(sc.embed(audio, tts.sample_rate, sc.CSM_1B_KEY, model, allow_short=True))


def stream_pcm(url: str, **body) -> tuple[bytes, int]:
    """The streamed pcm body and how many raw pieces it came in."""
    with httpx.Client(base_url=url, timeout=120) as c:
        with c.stream("POST", "/v1/audio/speech", json={"input": TEXT, "response_format": "pcm", **body}) as r:
            assert r.status_code == 200, r.read()
            pieces = list(r.iter_raw())
    return b"".join(pieces), len(pieces)


def test_streamed_pcm_is_generate_plus_whole_clip_embed(served, tts, tiny_sc):
    before = len(served.embeds)
    audio, _ = stream_pcm(served.url, max_audio_ms=MS)
    want = expected(tts, tiny_sc)
    assert_same_pcm(audio, want)
    plain = pcm_of(tts.generate(TEXT, 0, temperature=0, max_audio_ms=MS))
    assert len(plain) == len(want) and not np.array_equal(np.frombuffer(plain, "<i2"), np.frombuffer(want, "<i2"))
    # one embed of the whole utterance at sample 0 (not one per 4-frame chunk)
    assert served.embeds[before:] == [(len(want) // 2, 0)]


def test_streamed_wav_is_one_marked_clip(served, tts, tiny_sc):
    with httpx.Client(base_url=served.url, timeout=120) as c:
        r = c.post("/v1/audio/speech", json={"input": TEXT, "response_format": "wav", "stream_format": "audio",
                                             "voice": "1", "seed": 3, "max_audio_ms": MS})  # fmt: skip
    assert r.status_code == 200 and r.content[:4] == b"RIFF"
    assert_same_pcm(r.content[44:], expected(tts, tiny_sc, speaker=1, seed=3))


def test_sse_is_one_delta_of_the_marked_clip(served, tts, tiny_sc):
    with httpx.Client(base_url=served.url, timeout=120) as c:
        r = c.post("/v1/audio/speech", json={"input": TEXT, "response_format": "pcm", "stream_format": "sse",
                                             "max_audio_ms": MS})  # fmt: skip
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in events] == ["speech.audio.delta", "speech.audio.done"]
    audio = base64.b64decode(events[0]["audio"])
    assert_same_pcm(audio, expected(tts, tiny_sc))
    assert events[1]["usage"]["output_tokens"] == len(audio) // 2 // 1920 == MS // 80


def test_concurrent_streams_are_each_marked_whole(served, tts, tiny_sc):
    """Two requests in the scheduler's slots at once: each utterance gets its own whole-clip mark."""
    got: dict[int, bytes] = {}

    def one(speaker):
        got[speaker], _ = stream_pcm(served.url, voice=str(speaker), seed=speaker, max_audio_ms=MS + 160 * speaker)

    threads = [threading.Thread(target=one, args=(s,)) for s in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for s in (0, 1):
        assert_same_pcm(got[s], expected(tts, tiny_sc, speaker=s, seed=s, max_audio_ms=MS + 160 * s))


# long enough that the request is still generating when the test acts on it, even on a loaded
# machine (at 8 s a tiny model could finish before the server saw the client leave)
RUNNING_MS = 60_000


def test_a_client_that_leaves_costs_no_embed(served):
    """No header is sent before the clip is whole and marked; a client that leaves while its
    audio is held frees the slot, and the held audio is never marked."""
    service = served.service
    before, done_before, frames0 = len(served.embeds), service.finished["cancelled"], service.frames_total
    body = json.dumps({"input": TEXT, "response_format": "pcm", "max_audio_ms": RUNNING_MS}).encode()
    sock = post_raw(served.port, "/v1/audio/speech", body)
    try:
        wait_for(lambda: service.frames_total > frames0 and service.running == 1, what="the request to run")
        sock.settimeout(0.2)
        with pytest.raises(TimeoutError):
            sock.recv(1)  # generating: nothing has been sent yet
    finally:
        sock.close()
    wait_for(lambda: service.finished["cancelled"] == done_before + 1, what="the slot to be freed")
    wait_for(lambda: service.running == 0 and not service._streams, what="the stream to end")
    time.sleep(0.2)  # a marking thread, if one were started, would have recorded its call by now
    assert len(served.embeds) == before


def test_a_request_cancelled_by_the_server_gets_a_503_and_no_partial_clip(served):
    """Shutdown cancels running streams (drain): a held clip is incomplete and unmarked, so the
    client gets a 503 to retry rather than a cut, unmarked or oddly marked clip."""
    service = served.service
    before, frames0 = len(served.embeds), service.frames_total
    got = {}

    def request():
        with httpx.Client(base_url=served.url, timeout=60) as c:
            got["r"] = c.post("/v1/audio/speech", json={"input": TEXT, "response_format": "pcm", "max_audio_ms": RUNNING_MS})

    t = threading.Thread(target=request)
    t.start()
    wait_for(lambda: service.frames_total > frames0 and service.running == 1, what="the request to run")
    service.cancel_all()
    t.join(60)
    r = got["r"]
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    assert r.json()["error"]["code"] == "cancelled" and "shutting down" in r.json()["error"]["message"]
    assert len(served.embeds) == before


# ---- the mark verifies: a planted encoder/decoder pair at SilentCipher's full frame layout ----
def planted_model():
    """SilentCipher's full config with a planted message decoder (the loudest of 5 STFT bins,
    silentcipher_helpers) and the matching encoder: frame t of the clip (hop 2048 at 44.1 kHz)
    gets the tone of the key's class t mod 21 over the content. A clip marked in pieces restarts
    the class sequence at each piece and does not verify."""
    from csm_audio.watermark import silentcipher as sc
    from csm_audio.watermark.silentcipher.model import key_symbols

    model = random_model(sc.SilentCipherConfig(), seed=0)
    model._frame_classes = planted_classes(model)

    def encode(y, key, message_sdr=None):
        classes = np.concatenate([key_symbols(key, model.cfg) + 1, [0]])
        idx = np.round(np.arange(len(y)) / 2048).astype(int) % 21
        freq = PLANTED_BINS[classes[idx]] * model.sample_rate / 4096
        tone = 0.3 * np.sin(2 * np.pi * np.cumsum(freq) / model.sample_rate)
        return (0.05 * y + tone).astype(np.float32)

    model.encode = encode
    return model


def test_served_audio_verifies(tiny_model, tts):
    from csm_audio.watermark import silentcipher as sc

    model = planted_model()
    plain = tts.generate(TEXT, 0, temperature=0, max_audio_ms=LONG_MS)
    assert not sc.verify(plain, tts.sample_rate, model=model).found
    pieces = [sc.embed(plain[i : i + 7680], tts.sample_rate, model=model, allow_short=True)
              for i in range(0, plain.size, 7680)]  # fmt: skip
    assert not sc.verify(np.concatenate(pieces), tts.sample_rate, model=model).found  # marked per 4-frame chunk
    srv = served_with(tiny_model, model, slots=1)
    try:
        audio, _ = stream_pcm(srv.url, max_audio_ms=LONG_MS)
    finally:
        srv.stop()
    assert len(audio) == plain.size * 2 == LONG_MS * 48
    result = sc.verify(np.frombuffer(audio, "<i2").astype(np.float32) / 32768, tts.sample_rate, model=model)
    assert result.found, result.reason
    assert result.payload == int.from_bytes(bytes(sc.CSM_1B_KEY), "big") and result.score > 0.9
