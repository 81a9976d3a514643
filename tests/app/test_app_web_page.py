"""The web page at `/` in a real browser: headless Chromium (Debian's package) driven by Playwright
loads it, speaks a sentence, and the page receives the streamed pcm and plays it (Web Audio).
Skips with the reason where Chromium or Playwright is missing."""

from __future__ import annotations

import shutil

import pytest

from server_helpers import Served, make_service

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM, args=["--autoplay-policy=no-user-gesture-required"])
        except Exception as e:  # noqa: BLE001 - a browser that cannot start here is a skip, with why
            pytest.skip(f"chromium does not start under playwright here: {e}")
        yield b
        b.close()


def test_the_page_speaks_and_plays_streamed_audio(tiny_model, browser, tmp_path):
    import numpy as np
    import soundfile as sf

    srv = Served(make_service(tiny_model, slots=2, data_dir=tmp_path))
    try:
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(srv.url + "/")
        page.wait_for_function("document.querySelectorAll('#voice option').length >= 2")
        page.fill("#text", "Hello from the browser.")
        page.fill("#temperature", "0")
        page.click("#speak")
        page.wait_for_function("window.csmStats.done || window.csmStats.error", timeout=120_000)
        stats = page.evaluate("window.csmStats")
        assert stats["error"] is None, stats
        assert stats["bytes"] == 2 * 10 * 1920 and stats["chunks"] >= 1  # 800 ms: the server's default limit
        assert abs(stats["scheduledSeconds"] - 0.8) < 1e-6
        page.wait_for_function("window.csmStats.playedSeconds >= 0.79", timeout=30_000)  # the audio clock ran it out
        assert page.is_visible("#download") and "done: 0.80 s" in page.inner_text("#status")
        # a voice uploaded from the page is encoded, kept, and picked
        sf.write(str(tmp_path / "me.wav"), (0.3 * np.sin(np.arange(12_000) * 0.05)).astype(np.float32), 16_000)
        page.fill("#vname", "me")
        page.fill("#vtext", "A voice to copy")
        page.set_input_files("#vaudio", str(tmp_path / "me.wav"))
        page.click("#upload")
        page.wait_for_function("document.getElementById('voice').value === 'me'", timeout=60_000)
        assert srv.service.voices.get("me").speaker == 0 and (tmp_path / "voices" / "me.npz").is_file()
        assert not errors
    finally:
        srv.stop()
