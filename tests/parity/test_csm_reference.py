"""The numpy reference CSM against Hugging Face transformers (the committed fixture, and live)."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import numpy as np
import pytest

from csm_core.config import csm_1b, csm_tiny
from csm_core.reference import CSMReference
from csm_core.testing.csm import load_oracle, oracle_weights, random_csm_weights, run_frames

TOOL = Path(__file__).resolve().parents[2] / "tools" / "make_reference.py"
ATOL = 1e-4


@pytest.fixture(scope="module")
def oracle():
    return load_oracle("csm_tiny")


@pytest.fixture(scope="module")
def model(oracle):
    return CSMReference(oracle["config"], oracle_weights(oracle))


def load_tool():
    """tools/make_reference.py as a module, skipping unless the pinned oracle versions are installed."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    spec = importlib.util.spec_from_file_location("make_reference", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    found = {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__}
    if found != tool.REQUIRED:
        pytest.skip(f"oracle pinned to {tool.REQUIRED}, found {found}")
    return tool


def assert_matches_oracle(model: CSMReference, oracle: dict, atol: float = ATOL) -> None:
    tokens, mask = oracle["tokens"], oracle["mask"]
    hidden = model.backbone_hidden(tokens, mask)
    np.testing.assert_allclose(hidden, oracle["backbone_hidden"], atol=atol, rtol=0)
    c0, depth = model.teacher_forced_logits(tokens, mask, oracle["tf_codes"])
    np.testing.assert_allclose(c0, oracle["c0_logits"], atol=atol, rtol=0)
    np.testing.assert_allclose(depth, oracle["depth_logits"], atol=atol, rtol=0)
    frames = run_frames(model, tokens, mask, len(oracle["greedy_frames"]))[0]
    mismatch = np.argwhere(frames != oracle["greedy_frames"])
    assert mismatch.size == 0, f"greedy codes differ from HF at (frame, codebook) {mismatch[:5].tolist()}"


def test_fixture_is_what_the_brief_promises(oracle):
    K = oracle["config"].audio_num_codebooks
    V = oracle["config"].audio_vocab_size
    S = oracle["tokens"].shape[1]
    assert oracle["tokens"].dtype == np.int64 and oracle["tokens"].shape == (1, S, K + 1)
    assert oracle["mask"].dtype == bool and oracle["mask"].shape == (1, S, K + 1)
    assert oracle["c0_logits"].shape == (1, V) and oracle["depth_logits"].shape == (1, K - 1, V)
    assert oracle["greedy_frames"].shape[0] >= 20 and oracle["greedy_frames"].dtype == np.int32
    np.testing.assert_array_equal(oracle["tf_codes"][0], oracle["greedy_frames"][0])
    # the prompt holds two all-zero EOS audio frames (one per context segment) and text frames
    audio_rows = oracle["mask"][0, :, :K].all(-1)
    eos_rows = audio_rows & (oracle["tokens"][0, :, :K] == 0).all(-1)
    assert eos_rows.sum() == 2 and oracle["mask"][0, :, K].sum() > 0
    # zeroed head rows: no code >= 2048 was ever chosen
    assert oracle["greedy_frames"].max() < 2048


def test_reference_matches_fixture(model, oracle):
    assert_matches_oracle(model, oracle)


@pytest.mark.reference
def test_reference_matches_live_oracle_other_seed():
    """Re-run the oracle tool in-process on a seed the fixture does not use."""
    tool = load_tool()
    config, seed = csm_tiny(), 7
    live = tool.make_oracle(config, seed, n_frames=3)
    live["config"] = config
    model = CSMReference(config, random_csm_weights(config, seed))
    assert_matches_oracle(model, live)


@pytest.mark.slow
@pytest.mark.reference
def test_reference_matches_live_oracle_full_size(capsys):
    """CSM-1B dimensions, random weights (~13 GB: run under `flock /work/bigmem.lock`)."""
    tool = load_tool()
    config, seed = csm_1b(), 3
    t0 = time.perf_counter()
    weights = random_csm_weights(config, seed)
    hf = tool.build_model(config, weights, full=True)
    live = tool.make_oracle(config, seed, n_frames=2, full=True, model=hf)
    del hf
    t1 = time.perf_counter()
    model = CSMReference(config, weights)
    tokens, mask = live["tokens"], live["mask"]
    hidden = model.backbone_hidden(tokens, mask)
    c0, depth = model.teacher_forced_logits(tokens, mask, live["tf_codes"])
    t2 = time.perf_counter()
    frames = run_frames(model, tokens, mask, len(live["greedy_frames"]))[0]
    t3 = time.perf_counter()
    with capsys.disabled():
        print(
            f"\nCSM-1B random weights, S={tokens.shape[1]}: max|d| hidden {np.abs(hidden - live['backbone_hidden']).max():.2e}"
            f" (scale {np.abs(live['backbone_hidden']).max():.2f}), c0 {np.abs(c0 - live['c0_logits']).max():.2e}"
            f" (scale {np.abs(live['c0_logits']).max():.2f}), depth {np.abs(depth - live['depth_logits']).max():.2e};"
            f" greedy {int((frames == live['greedy_frames']).sum())}/{frames.size} codes equal;"
            f" HF {t1 - t0:.0f} s, reference logits {t2 - t1:.1f} s, {len(frames)} frames {t3 - t2:.1f} s"
        )
    np.testing.assert_allclose(hidden, live["backbone_hidden"], atol=ATOL, rtol=0)
    np.testing.assert_allclose(c0, live["c0_logits"], atol=ATOL, rtol=0)
    np.testing.assert_allclose(depth, live["depth_logits"], atol=ATOL, rtol=0)
    np.testing.assert_array_equal(frames, live["greedy_frames"])
