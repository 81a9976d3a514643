"""Helpers for the `csm serve` tests: a real uvicorn server on a free loopback port in a thread,
expected audio from the facade, and 16-bit comparisons."""

from __future__ import annotations

import socket
import threading
import time

import numpy as np
import pytest

TEXT = "Hello over HTTP"
VOICE_TEXT = "A voice to copy"


class Served:
    """A running server: `url`, `service`, `stop()`."""

    def __init__(self, service, **app_options):
        from csm_app.server import make_server

        try:
            socket.create_server(("127.0.0.1", 0)).close()
        except OSError as e:
            pytest.skip(f"cannot listen on a local TCP port here: {e}")
        self.service = service
        listening = threading.Event()
        self.port = None

        def on_listening(host, port):
            self.port = port
            listening.set()

        app_options.setdefault("grace_s", 2.0)
        self.server = make_server(service, "127.0.0.1", 0, on_listening=on_listening, **app_options)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        if not listening.wait(60):
            raise RuntimeError("the server did not start listening")
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.service.close()


def make_service(tiny_model, voices=(), **options):
    from csm_app import CSM
    from csm_app.speech_service import SpeechService
    from csm_core.options import GenerationOptions

    tts = CSM.load(tiny_model, threads=1, watermark=options.pop("watermark", False))
    options.setdefault("defaults", GenerationOptions(temperature=0, max_audio_ms=800))
    options.setdefault("chunk_frames", 4)
    return SpeechService(tts, voices, **options)


def pcm_of(audio: np.ndarray) -> bytes:
    from csm_app.audio_io import pcm16

    return pcm16(audio)


def same_pcm(a: bytes, b: bytes) -> bool:
    """Equal 16-bit audio, give or take 1 LSB: the numpy codec picks how to split its products
    between two threads by timing, which can move a float sum's last bit (the codes are identical)."""
    x, y = np.frombuffer(a, "<i2").astype(np.int32), np.frombuffer(b, "<i2").astype(np.int32)
    return x.shape == y.shape and bool(np.all(np.abs(x - y) <= 1))


def assert_same_pcm(a: bytes, b: bytes) -> None:
    assert len(a) == len(b), f"{len(a)} bytes, expected {len(b)}"
    assert same_pcm(a, b), "the audio differs by more than 1 LSB"


def wait_for(condition, seconds: float = 30.0, what: str = "a condition") -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def raw_request(port: int, head: bytes, body: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(head + body)
    return sock


def post_raw(port: int, path: str, body: bytes, extra: bytes = b"") -> socket.socket:
    head = b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n" % (
        path.encode(), len(body), extra)
    return raw_request(port, head, body)


def read_all(sock: socket.socket) -> bytes:
    out = []
    while True:
        data = sock.recv(65536)
        if not data:
            return b"".join(out)
        out.append(data)
