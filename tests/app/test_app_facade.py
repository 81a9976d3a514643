"""`from csm_app import CSM`: load once, generate and stream many times (tiny random model, torch-free)."""

from __future__ import annotations

import numpy as np
import pytest

TEXT = "The facade speaks"


@pytest.fixture(scope="module")
def tts(tiny_model):
    from csm_app import CSM

    return CSM.load(tiny_model, threads=1, watermark=False)


def test_generate_is_float32_24khz_and_matches_the_reference(tts, tiny_model):
    from csm_core.generation import Generator
    from csm_core.reference import CSMReference
    from csm_core.weights import load_csm_checkpoint

    audio = tts.generate(TEXT, temperature=0, max_audio_ms=800)
    assert tts.sample_rate == 24_000
    assert tts.info.backend_name == "cpu" and tts.model.threads == 1 and tts.model.quant == "f32"
    assert audio.dtype == np.float32 and audio.shape == (10 * 1920,)
    config, weights = load_csm_checkpoint(tiny_model)
    ref = Generator(CSMReference(config, weights), tts.tokenizer, tts.codec).generate(TEXT, temperature=0, max_audio_ms=800)
    np.testing.assert_array_equal(tts.generate_codes(TEXT, temperature=0, max_audio_ms=800).codes, ref.codes)
    np.testing.assert_allclose(audio, ref.audio, atol=1e-5)


def test_seeds_make_sampling_reproducible(tts):
    a = tts.generate(TEXT, seed=7, max_audio_ms=400)
    b = tts.generate(TEXT, seed=7, max_audio_ms=400)
    c = tts.generate(TEXT, seed=8, max_audio_ms=400)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_stream_yields_chunks_as_frames_come(tts):
    chunks = list(tts.stream(TEXT, temperature=0, max_audio_ms=800, chunk_frames=4))
    assert [c.size for c in chunks] == [4 * 1920, 4 * 1920, 2 * 1920]
    np.testing.assert_allclose(np.concatenate(chunks), tts.generate(TEXT, temperature=0, max_audio_ms=800), atol=1e-4)


def test_context_segment_changes_the_output(tts):
    from csm_app import Segment

    clip = tts.generate("A voice to copy", temperature=0, max_audio_ms=400)
    plain = tts.generate_codes(TEXT, speaker=1, temperature=0, max_audio_ms=400).codes
    with_ctx = tts.generate_codes(TEXT, speaker=1, context=[Segment(1, "A voice to copy", audio=clip)],
                                  temperature=0, max_audio_ms=400).codes
    assert plain.shape == with_ctx.shape == (32, 5)
    assert not np.array_equal(plain, with_ctx)


def test_watermarked_stream_is_marked_chunk_by_chunk(tiny_model):
    from csm_app import CSM

    marked = CSM.load(tiny_model, threads=1)
    chunks = list(marked.stream(TEXT, temperature=0, max_audio_ms=4000, split_sentences=False, chunk_frames=5))
    sizes = [c.size for c in chunks]
    assert sizes == [5 * 1920] * 10  # no extra latency: every chunk comes as soon as it is decoded
    result = marked.watermarker.detect(np.concatenate(chunks), marked.sample_rate)
    assert result.found and result.payload == 0xD4D39238
    audio = marked.generate(TEXT, temperature=0, max_audio_ms=4000, split_sentences=False)
    assert marked.watermarker.detect(audio, marked.sample_rate).found


def test_bad_options_raise_clear_errors(tts, tiny_model):
    from csm_app import CSM

    with pytest.raises(TypeError, match="unknown generation option"):
        list(tts.stream(TEXT, temprature=0.5))
    with pytest.raises(ValueError, match="unknown quant 'q3'"):
        CSM.load(tiny_model, quant="q3")
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        CSM.load(tiny_model, backend="tpu")


def test_cpu_bf16_and_mlx_backends(tiny_model):
    from csm_app import CSM

    bf16 = CSM.load(tiny_model, quant="bf16", threads=1, watermark=False)
    assert bf16.info.backend_name == "cpu" and bf16.model.quant == "bf16"
    assert bf16.generate(TEXT, temperature=0, max_audio_ms=240).shape == (3 * 1920,)
    pytest.importorskip("mlx.core")
    on_mlx = CSM.load(tiny_model, backend="mlx", quant="bf16", watermark=False)
    assert type(on_mlx.model).__name__ == "MlxBackend"
    assert on_mlx.generate(TEXT, temperature=0, max_audio_ms=240).shape == (3 * 1920,)


def test_make_backend_maps_quant_names_for_mlx(tiny_model):
    pytest.importorskip("mlx.core")
    from csm_app.backends import make_backend
    from csm_core.weights import load_csm_checkpoint

    config, weights = load_csm_checkpoint(tiny_model)
    q8 = make_backend("mlx", config, weights, quant="q8_0", group_size=32)
    assert q8.model.quantization == {"bits": 8, "group_size": 32, "mode": "affine"}
    q4 = make_backend("mlx", config, weights, quant="q4_0", group_size=32)
    assert q4.model.quantization["bits"] == 4
    assert getattr(make_backend("mlx", config, weights, quant="f32").model, "quantization", None) is None


def test_generate_batch_equals_each_request_alone_when_greedy(tts):
    from csm_app import Request, Segment

    clip = tts.generate("A voice to copy", temperature=0, max_audio_ms=400)
    requests = [TEXT, Request("Another line, longer than the first one", speaker=1),
                Request("With a voice", speaker=1, context=[Segment(1, "A voice to copy", audio=clip)])]
    clips = tts.generate_batch(requests, temperature=0, max_audio_ms=640)
    alone = [tts.generate(TEXT, temperature=0, max_audio_ms=640, split_sentences=False)] + [
        tts.generate(r.text, speaker=r.speaker, context=r.context, temperature=0, max_audio_ms=640,
                     split_sentences=False)
        for r in requests[1:]
    ]
    assert len(clips) == 3
    for got, want in zip(clips, alone):
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-4)
    codes = tts.generate_batch_codes(requests, temperature=0, max_audio_ms=640)
    assert [g.stats.stop_reasons for g in codes] == [["max_length"]] * 3
    with pytest.raises(TypeError, match="unknown generation option.*split_sentences"):
        tts.generate_batch([TEXT], split_sentences=False)


def test_stream_batch_chunks_join_to_the_batch_clips(tts):
    from csm_app import Request

    requests = [TEXT, Request("Another line, said by one", speaker=1)]
    events = list(tts.stream_batch(requests, chunk_frames=3, temperature=0, max_audio_ms=640))
    clips = tts.generate_batch(requests, temperature=0, max_audio_ms=640)
    for i, clip in enumerate(clips):
        mine = [c for j, c in events if j == i]
        assert mine[-1] is None and [c.size for c in mine[:-1]] == [3 * 1920, 3 * 1920, 2 * 1920]
        np.testing.assert_allclose(np.concatenate(mine[:-1]), clip, atol=1e-4)


def test_generate_batch_and_stream_batch_are_watermarked(tiny_model):
    from csm_app import CSM

    marked = CSM.load(tiny_model, threads=1)
    texts = [TEXT, "A second utterance"]
    clips = marked.generate_batch(texts, temperature=0, max_audio_ms=4000)
    events = list(marked.stream_batch(texts, temperature=0, max_audio_ms=4000, chunk_frames=5))
    streamed = [np.concatenate([c for j, c in events if j == i and c is not None]) for i in range(2)]
    for clip in clips + streamed:
        result = marked.watermarker.detect(clip, marked.sample_rate)
        assert result.found and result.payload == 0xD4D39238
