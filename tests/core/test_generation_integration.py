"""Generator with the real pieces: Meta's Llama-3 tokenizer (csm_tokenizers), the numpy Mimi codec
(csm_audio, tiny random weights) and the numpy reference CSM (tiny oracle weights)."""

import os
from pathlib import Path

import numpy as np
import pytest

from csm_core import Segment, mimi_tiny
from csm_core.generation import Generator
from csm_core.reference import CSMReference
from csm_core.testing.csm import load_oracle, oracle_weights
from csm_core.testing.mimi import mimi_test_audio, random_mimi_weights

csm_audio = pytest.importorskip("csm_audio")
csm_tokenizers = pytest.importorskip("csm_tokenizers")
# Meta's tokenizer.model is not in the repo (see tests/tokenizers/conftest.py): beside it, or from the env.
TOKENIZER = Path(
    os.environ.get("CSM_LLAMA3_TOKENIZER")
    or Path(__file__).resolve().parents[3] / "shared" / "testdata" / "llama3" / "tokenizer.model"
)


class Recording(CSMReference):
    """The reference backend, keeping the prompt of each run."""

    def reset(self, batch_size=1, seed=None):
        super().reset(batch_size, seed)
        self.fed = []

    def generate_frame(self, tokens, mask, params):
        self.fed.append(tokens)
        return super().generate_frame(tokens, mask, params)


@pytest.fixture(scope="module")
def gen():
    if not TOKENIZER.is_file():
        pytest.skip(f"Llama-3 tokenizer.model not found at {TOKENIZER} (set CSM_LLAMA3_TOKENIZER)")
    o = load_oracle()
    mimi = csm_audio.Mimi(mimi_tiny(), random_mimi_weights(mimi_tiny(), 0))
    return Generator(Recording(o["config"], oracle_weights(o)), csm_tokenizers.load_llama3_tiktoken(TOKENIZER), mimi)


def test_real_tokenizer_builds_the_official_prompt(gen):
    gen.generate("Hello from Sesame.", 0, max_audio_ms=80, temperature=0.0)
    ids = gen.model.fed[0][0, :, 32]
    np.testing.assert_array_equal(ids, [128000, 58, 15, 60, 9906, 505, 64027, 373, 13, 128001])  # spec/tokenizer.md §4


def test_context_audio_generation_and_streamed_audio_match(gen):
    clip = mimi_test_audio(12_000)  # 0.5 s: 7 frames (ceil(12000 / 1920))
    ctx = [Segment(1, "Hi there.", audio=clip)]
    out = gen.generate("Hello from Sesame. How are you?", 0, ctx, max_audio_ms=400, seed=1)
    assert out.codes.shape == (32, 10) and out.stats.sentences == ["Hello from Sesame.", "How are you?"]
    np.testing.assert_allclose(out.audio, gen.codec.decode(out.codes), atol=1e-6)
    ctx_codes = gen.codec.encode(clip, 32)
    prompt = gen.model.fed[0][0]  # of the last run (sentence 2), which starts with the caller's context
    n_text = len(gen.tokenizer.encode("[1]Hi there.", bos=True, eos=True))
    np.testing.assert_array_equal(prompt[n_text : n_text + 7, :32], ctx_codes.T)
    stream = gen.stream_audio("Hello from Sesame. How are you?", 0, ctx, max_audio_ms=400, seed=1, chunk_frames=4)
    chunks = list(stream)
    assert [len(c) for c in chunks] == [4 * 1920, 4 * 1920, 2 * 1920]
    np.testing.assert_allclose(np.concatenate(chunks), out.audio, atol=1e-5)
    assert 0 < stream.stats.time_to_first_audio_s <= stream.stats.elapsed_s
