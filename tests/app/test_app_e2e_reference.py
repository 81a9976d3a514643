"""End to end: `csm say` on a random CSM laid out like the real sesame/csm-1b hub repo, against the
Hugging Face reference.

The model comes from the oracle tool (tools/make_reference.py: `build_model` + `export`, the code
behind `--export-dir`): DIR/hf is the hub repo (original model.safetensors beside the transformers
shards that also carry a random Mimi, config.json with both field sets), DIR/original the original
layout. The reference codes are HF `generate` (greedy backbone and depth decoder) on the same
model and prompt; the reference audio is the numpy Mimi decode of those codes.
The torch-initialised random Mimi makes loud audio with a DC offset (mean -0.8, peak 4.2, clipped to
[-1, 1] in the 16-bit WAV), which is no fair test of the watermark: test_app_cli.py checks the
watermark-on path on the torch-free tiny model, whose audio stays within [-1, 1].
"""

from __future__ import annotations

import importlib.util
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from app_helpers import REPO, place_in_cache, require_tokenizer, run_csm, wav_info

pytestmark = pytest.mark.reference

TEXT = "Hello from the end to end test"
FRAMES = 10  # --max-audio-ms 800 = 10 frames of 80 ms
SAMPLES = FRAMES * 1920


def _oracle_tool():
    spec = importlib.util.spec_from_file_location("make_reference", REPO / "tools" / "make_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(export dir, tokenizer path, HF greedy codes [32, FRAMES])."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    tokenizer_path = require_tokenizer()
    tool = _oracle_tool()
    try:
        tool.check_versions()
    except SystemExit as e:
        pytest.skip(f"oracle versions differ: {e}")
    from csm_core import csm_tiny
    from csm_core.testing.csm import random_csm_weights
    from csm_tokenizers import encode_turn, load_tokenizer

    config = csm_tiny()
    weights = random_csm_weights(config, 0)
    model = tool.build_model(config, weights)
    out = tmp_path_factory.mktemp("export")
    tool.export(out, config, weights, model)

    # The official prompt of one turn without context: the text ids in the last column.
    ids = encode_turn(load_tokenizer(tokenizer_path), 0, TEXT)
    tokens = np.zeros((1, len(ids), 33), np.int64)
    mask = np.zeros((1, len(ids), 33), bool)
    tokens[0, :, -1] = ids
    mask[0, :, -1] = True
    frames = tool.oracle_outputs(model, tokens, mask, FRAMES)["greedy_frames"]  # [FRAMES, 32]
    assert frames.shape == (FRAMES, 32) and not (frames == 0).all(1).any()
    return out, tokenizer_path, frames.T.astype(np.int64)


@pytest.fixture(scope="module")
def reference_audio(exported):
    from csm_audio import Mimi

    out, _, codes = exported
    mimi = Mimi.from_checkpoint(out / "hf" / "transformers.safetensors.index.json")
    return mimi, mimi.decode(codes)


@pytest.fixture
def sesame_cache(exported, tmp_path, monkeypatch):
    """A temporary HF cache holding the export as sesame/csm-1b (with the tokenizer in the snapshot)."""
    out, tokenizer_path, _ = exported
    cache = tmp_path / "hub"
    snap = place_in_cache(cache, "sesame/csm-1b", out / "hf")
    shutil.copy(tokenizer_path, snap / "tokenizer.model")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.setenv("CSM_NUM_THREADS", "1")
    return cache


def _check_wav(path, reference_audio):
    _, ref_audio = reference_audio
    audio, sr, channels = wav_info(path)
    assert (sr, channels, audio.size) == (24_000, 1, SAMPLES)
    # 16-bit PCM: within half a step of the reference decode (plus float noise of streaming decode).
    np.testing.assert_allclose(audio, np.clip(ref_audio, -1, 1), atol=1.0 / 32767 + 1e-4)


SAY = ["say", TEXT, "--offline", "--temperature", "0", "--max-audio-ms", "800", "--no-watermark"]


def test_say_sesame_snapshot_cli_runner(sesame_cache, exported, reference_audio, tmp_path):
    from csm_app.cli import main

    wav = tmp_path / "out.wav"
    result = CliRunner().invoke(main, [*SAY, "--model", "sesame/csm-1b", "-o", str(wav)])
    assert result.exit_code == 0, result.output
    _check_wav(wav, reference_audio)


def test_say_sesame_snapshot_subprocess(sesame_cache, exported, reference_audio, tmp_path):
    wav = tmp_path / "out.wav"
    proc = run_csm(*SAY, "--model", "sesame/csm-1b", "-o", str(wav), env={"HF_HUB_CACHE": str(sesame_cache)})
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == b""
    assert b"\r" not in proc.stderr and b"frames" not in proc.stderr  # no progress: stderr is not a terminal
    _check_wav(wav, reference_audio)


def test_facade_codes_equal_hf_greedy(sesame_cache, exported):
    from csm_app import CSM

    _, _, codes = exported
    tts = CSM.load("sesame/csm-1b", offline=True, watermark=False)
    assert tts.info.files.layout == "sesame"
    assert tts.info.files.weights.name == "model.safetensors"
    assert tts.info.files.mimi.name == "transformers.safetensors.index.json"
    assert tts.info.files.tokenizer.name == "tokenizer.model"
    for _ in range(2):  # loads once, generates many times
        out = tts.generate_codes(TEXT, temperature=0, max_audio_ms=800)
        np.testing.assert_array_equal(out.codes, codes)


def test_say_original_layout(exported, reference_audio, tmp_path, monkeypatch):
    from csm_app.cli import main

    out, tokenizer_path, _ = exported
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    wav = tmp_path / "out.wav"
    args = [*SAY, "--model", str(out / "original"), "--mimi", str(out / "hf" / "transformers.safetensors.index.json"),
            "--tokenizer", str(tokenizer_path), "--threads", "1", "-o", str(wav)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    _check_wav(wav, reference_audio)


def test_say_hf_layout_only(exported, reference_audio, tmp_path, monkeypatch):
    """A directory with only the transformers shards (no original file): CSM is read from the HF
    layout (renamed, q/k rows permuted back), Mimi from its codec_model.* tensors."""
    from csm_app import CSM

    out, tokenizer_path, codes = exported
    hf_only = tmp_path / "hf-only"
    hf_only.mkdir()
    for f in (out / "hf").iterdir():
        if f.name != "model.safetensors":
            (hf_only / f.name).symlink_to(f)
    shutil.copy(tokenizer_path, hf_only / "tokenizer.model")
    monkeypatch.setenv("CSM_NUM_THREADS", "1")
    tts = CSM.load(hf_only, watermark=False)
    assert tts.info.files.layout == "hf" and tts.info.files.weights.name.startswith("transformers")
    np.testing.assert_array_equal(tts.generate_codes(TEXT, temperature=0, max_audio_ms=800).codes, codes)
