"""The app's choice of watermark (csm_app.watermarks) and its CLI: --watermark, the default
(SilentCipher when its weights are found, else csm's mark with a notice), `watermark detect`
reporting both marks, `info` naming the mark in use."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from app_helpers import place_in_cache, wav_info

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "audio"))
from silentcipher_helpers import TINY, random_model  # noqa: E402

from csm_app import watermarks  # noqa: E402
from csm_audio.watermark import PatchworkWatermarker  # noqa: E402
from csm_audio.watermark.silentcipher import SilentCipherNotFound, SilentCipherWatermarker  # noqa: E402

SAY = ["say", "Hello there", "--temperature", "0", "--max-audio-ms", "1600", "--no-split", "--threads", "1"]


@pytest.fixture
def no_weights(hub_cache, monkeypatch):
    monkeypatch.delenv(watermarks.ENV_WEIGHTS, raising=False)
    return hub_cache


@pytest.fixture
def tiny_weights(no_weights, monkeypatch):
    """SilentCipher 'found': a tiny random numpy model stands in for the released weights."""
    model = random_model(TINY, seed=0)
    model.source = "/fake/silentcipher"
    monkeypatch.setattr(watermarks, "_silentcipher", lambda path=None: (model, model.source))
    return model


@pytest.fixture
def cli(tiny_model, hub_cache, monkeypatch):
    from csm_app.cli import main

    place_in_cache(hub_cache, "sesame/csm-1b", tiny_model)
    monkeypatch.setenv("CSM_NUM_THREADS", "1")
    return lambda *args: CliRunner().invoke(main, list(args))


def test_default_falls_back_to_csm_with_a_notice(no_weights, caplog):
    with caplog.at_level(logging.WARNING):
        choice = watermarks.choose(True)
    assert choice.name == "csm" and isinstance(choice.marker, PatchworkWatermarker)
    (line,) = [r.getMessage() for r in caplog.records]
    assert "not SilentCipher" in line and watermarks.ENV_WEIGHTS in line and "sony/silentcipher" in line
    with pytest.raises(SilentCipherNotFound, match="--watermark silentcipher"):
        watermarks.choose("silentcipher")
    assert watermarks.choose("none").marker is None and watermarks.choose(False).marker is None
    assert watermarks.choose("csm").name == "csm"
    with pytest.raises(ValueError, match="silentcipher, csm, none"):
        watermarks.choose("audioseal")
    assert watermarks.describe().startswith("csm (SilentCipher weights not found")


def test_default_is_silentcipher_when_found(tiny_weights, caplog):
    with caplog.at_level(logging.WARNING):
        choice = watermarks.choose(True)
    assert choice.name == "silentcipher" and isinstance(choice.marker, SilentCipherWatermarker)
    assert not caplog.records
    assert watermarks.choose("csm").name == "csm"


def test_requested():
    assert watermarks.requested(None) is True and watermarks.requested("csm") == "csm"
    assert watermarks.requested(None, no_watermark=True) == "none"
    with pytest.raises(ValueError, match="contradicts"):
        watermarks.requested("silentcipher", no_watermark=True)


def test_joined_events_hold_each_request_until_its_end():
    def events():
        yield from [(0, np.ones(2)), (1, np.ones(3)), (0, np.zeros(1)), (0, None), (1, None), (2, None)]

    out = [(i, None if c is None else c.tolist()) for i, c in watermarks.joined_events(events())]
    assert out == [(0, [1.0, 1.0, 0.0]), (0, None), (1, [1.0, 1.0, 1.0]), (1, None), (2, None)]


def test_say_with_silentcipher_marks_the_whole_utterance(cli, tiny_weights, tmp_path):
    from csm_audio.watermark import silentcipher as sc

    wav, plain = tmp_path / "sc.wav", tmp_path / "plain.wav"
    assert cli(*SAY, "-o", str(wav)).exit_code == 0
    assert cli(*SAY, "--watermark", "none", "-o", str(plain)).exit_code == 0
    marked, sr, _ = wav_info(wav)
    clean, _, _ = wav_info(plain)
    expected = sc.embed(clean, sr, sc.CSM_1B_KEY, tiny_weights, allow_short=True)
    assert np.max(np.abs(marked - expected)) < 2e-4  # one clip-wide mark (16-bit file)
    assert np.max(np.abs(marked - clean)) > 1e-3


def test_watermark_option_and_errors(cli, no_weights, tmp_path):
    r = cli(*SAY, "--watermark", "silentcipher", "-o", str(tmp_path / "x.wav"))
    assert r.exit_code != 0 and "SilentCipher weights" in r.output and "not found" in r.output
    r = cli(*SAY, "--watermark", "csm", "--no-watermark", "-o", str(tmp_path / "x.wav"))
    assert r.exit_code != 0 and "contradicts" in r.output
    r = cli(*SAY, "--watermark", "bogus", "-o", str(tmp_path / "x.wav"))
    assert r.exit_code == 2 and "bogus" in r.output


def test_detect_reports_both_marks_and_info(cli, no_weights, tmp_path):
    wav = tmp_path / "csm.wav"
    assert cli(*SAY, "--watermark", "csm", "-o", str(wav)).exit_code == 0
    r = cli("watermark", "detect", str(wav))
    assert r.exit_code == 0, r.output
    assert "csm watermark found payload=0xd4d39238" in r.output
    assert "silentcipher watermark not checked: SilentCipher weights" in r.output
    only = cli("watermark", "detect", "--mark", "silentcipher", str(wav))
    assert only.exit_code == 3 and "csm watermark" not in only.output
    info = cli("info")
    assert "watermark       csm (SilentCipher weights not found" in info.output


def test_detect_finds_silentcipher(cli, no_weights, tmp_path, monkeypatch):
    """A full-size model with the planted message decoder (silentcipher_helpers) as the weights."""
    from csm_audio.watermark import silentcipher as sc
    from silentcipher_helpers import planted_classes, planted_clip

    model = random_model(sc.SilentCipherConfig(), seed=0)
    model._frame_classes = planted_classes(model)
    monkeypatch.setattr(watermarks, "_silentcipher", lambda path=None: (model, "/fake"))
    wav = tmp_path / "planted.wav"
    sf.write(str(wav), sc.sinc_resample(planted_clip(2.5), 44100, 24000), 24000, subtype="FLOAT")
    r = cli("watermark", "detect", str(wav))
    assert r.exit_code == 0, r.output
    assert "silentcipher watermark found payload=0xd4d39238c9 score=1.00" in r.output
    assert "csm watermark not found" in r.output
