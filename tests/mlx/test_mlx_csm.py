"""CSM in MLX (tiny config, fp32) against an independent float64 numpy forward, plus batching,
dtypes, quantization and bad input."""

import os

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core")

from csm_core.config import csm_1b, csm_tiny  # noqa: E402
from csm_core.protocols import SamplingParams  # noqa: E402
from csm_core.testing.csm import random_csm_weights  # noqa: E402
from csm_mlx.backend import MlxBackend  # noqa: E402
from csm_mlx.llama import rope_periods  # noqa: E402
from csm_mlx.model import WeightsError  # noqa: E402

import np_reference as R  # noqa: E402

GREEDY = SamplingParams(temperature=0)


@pytest.fixture(scope="module")
def tiny():
    cfg = csm_tiny()
    w = random_csm_weights(cfg, 0)
    tokens, mask = R.tiny_prompt(cfg, seed=1)
    return cfg, w, tokens, mask


@pytest.fixture(scope="module")
def backend(tiny):
    cfg, w, _, _ = tiny
    return MlxBackend(cfg, w)


def _audio_row(codes):
    tok = np.zeros((codes.shape[0], 1, codes.shape[1] + 1), np.int64)
    tok[:, 0, :-1] = codes
    m = np.zeros(tok.shape, bool)
    m[:, 0, :-1] = True
    return tok, m


def _greedy(be, tokens, mask, n, params=GREEDY):
    be.reset(tokens.shape[0])
    out = [be.generate_frame(tokens, mask, params)]
    for _ in range(n - 1):
        out.append(be.generate_frame(*_audio_row(out[-1]), params))
    return np.stack(out, axis=1)  # [B, n, K]


@pytest.mark.parametrize("flavor", ["backbone", "decoder"])
def test_rope_matches_explicit_interleaved_pairs(flavor):
    cfg = getattr(csm_1b(), flavor)
    x = np.random.default_rng(0).normal(size=(1, 2, 6, cfg.head_dim)).astype(np.float32)
    for offset, atol in ((0, 1e-6), (2040, 2e-4)):  # fp32 angles at position ~2k carry ~1e-4 rad
        out = mx.fast.rope(mx.array(x), cfg.head_dim, traditional=True, base=None, scale=1.0, offset=offset, freqs=rope_periods(cfg))
        ref = R._rope(x[0].transpose(1, 0, 2).astype(np.float64), np.arange(offset, offset + 6), cfg.inv_freq()).transpose(1, 0, 2)
        np.testing.assert_allclose(np.array(out)[0], ref, atol=atol)


def test_teacher_forced_logits_match_numpy(tiny, backend):
    cfg, w, tokens, mask = tiny
    codes = np.random.default_rng(2).integers(0, 2048, (1, cfg.audio_num_codebooks))
    c0, depth = backend.teacher_forced_logits(tokens[None], mask[None], codes)
    rc0, rdepth = R.teacher_forced(w, cfg, tokens, mask, codes[0])
    assert c0.shape == (1, 2051) and depth.shape == (1, 31, 2051)
    np.testing.assert_allclose(c0[0], rc0, atol=1e-4)
    np.testing.assert_allclose(depth[0], rdepth, atol=1e-4)


def test_greedy_frames_with_cache_match_uncached_numpy(tiny, backend):
    cfg, w, tokens, mask = tiny
    ref = R.greedy_frames(w, cfg, tokens, mask, 10)
    got = _greedy(backend, tokens[None], mask[None], 10)[0]
    np.testing.assert_array_equal(got, ref)
    assert backend.position == tokens.shape[0] + 9


def test_left_padded_batch_equals_single_rows(tiny, backend):
    cfg, w, tokens, mask = tiny
    short_t, short_m = tokens[3:], mask[3:]
    pad = 3
    bt = np.zeros((2,) + tokens.shape, np.int64)
    bm = np.zeros((2,) + mask.shape, bool)
    bt[0], bm[0] = tokens, mask
    bt[1, pad:], bm[1, pad:] = short_t, short_m
    bt[1, :pad] = 2050  # padding rows carry junk ids; the all-False mask is what marks them
    codes = np.random.default_rng(3).integers(0, 2048, (2, cfg.audio_num_codebooks))
    c0, depth = backend.teacher_forced_logits(bt, bm, codes)
    for b, (t, m) in enumerate(((tokens, mask), (short_t, short_m))):
        rc0, rdepth = R.teacher_forced(w, cfg, t, m, codes[b])
        np.testing.assert_allclose(c0[b], rc0, atol=1e-4)
        np.testing.assert_allclose(depth[b], rdepth, atol=1e-4)
    frames = _greedy(backend, bt, bm, 4)
    np.testing.assert_array_equal(frames[0], _greedy(backend, tokens[None], mask[None], 4)[0])
    np.testing.assert_array_equal(frames[1], _greedy(backend, short_t[None], short_m[None], 4)[0])


def test_sampled_frames_are_seeded_and_decodable(tiny, backend):
    _, _, tokens, mask = tiny
    p = SamplingParams(temperature=0.9, topk=50)
    backend.reset(1, seed=7)
    a = backend.generate_frame(tokens[None], mask[None], p)
    backend.reset(1, seed=7)
    b = backend.generate_frame(tokens[None], mask[None], p)
    backend.reset(1, seed=8)
    c = backend.generate_frame(tokens[None], mask[None], p)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.dtype == np.int32 and a.shape == (1, 32) and a.max() < 2048 and a.min() >= 0


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_teacher_forced_agreement(tiny, dtype):
    cfg, w, tokens, mask = tiny
    be = MlxBackend(cfg, w, dtype=dtype)
    codes = np.random.default_rng(2).integers(0, 2048, (1, cfg.audio_num_codebooks))
    c0, depth = be.teacher_forced_logits(tokens[None], mask[None], codes)
    rc0, rdepth = R.teacher_forced(w, cfg, tokens, mask, codes[0])
    err = max(np.abs(c0[0] - rc0).max(), np.abs(depth[0] - rdepth).max())
    top1 = np.mean(np.argmax(depth[0, :, :2048], -1) == np.argmax(rdepth[:, :2048], -1))
    print(f"{dtype}: max |dlogit| {err:.3g}, depth top-1 agreement {top1:.2f}, c0 top-1 {np.argmax(c0[0]) == np.argmax(rc0)}")
    assert err < 0.05  # spec tolerance is ~0.3 at full size; tiny logits are ~0.6 in scale
    assert top1 >= 0.8


@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_model_loads_and_generates(tiny, bits):
    cfg, w, tokens, mask = tiny
    be = MlxBackend(cfg, w, quant_bits=bits, group_size=32)
    assert "scales" in be.model.backbone.layers[0].attn.q_proj
    codes = np.random.default_rng(2).integers(0, 2048, (1, cfg.audio_num_codebooks))
    c0, depth = be.teacher_forced_logits(tokens[None], mask[None], codes)
    rc0, rdepth = R.teacher_forced(w, cfg, tokens, mask, codes[0])
    rel = np.linalg.norm(depth[0] - rdepth) / np.linalg.norm(rdepth)
    assert rel < {8: 0.02, 4: 0.2}[bits], rel
    frames = _greedy(be, tokens[None], mask[None], 3)
    assert frames.shape == (1, 3, 32) and frames.max() < 2048


def test_bad_quantization_is_rejected(tiny):
    cfg, w, _, _ = tiny
    with pytest.raises(ValueError, match="bits"):
        MlxBackend(cfg, w, quant_bits=3)
    with pytest.raises(ValueError, match="group size"):
        MlxBackend(cfg, w, quant_bits=8, group_size=48)
    with pytest.raises(ValueError, match="multiple of group size 64"):
        MlxBackend(cfg, w, quant_bits=8, group_size=64)  # the tiny decoder is 32 wide


def test_weights_that_do_not_fit_the_config_are_rejected(tiny):
    cfg, w, _, _ = tiny
    missing = {k: v for k, v in w.items() if k != "decoder.norm.scale"}
    with pytest.raises(WeightsError, match=r"1 missing tensor\(s\):\s+decoder.norm.scale \(32,\)"):
        MlxBackend(cfg, missing)
    bad = dict(w, **{"projection.weight": np.zeros((16, 64), np.float32)})
    with pytest.raises(WeightsError, match=r"projection.weight: expected \(32, 64\), found \(16, 64\)"):
        MlxBackend(cfg, bad)
    with pytest.raises(WeightsError, match=r"1 unexpected tensor\(s\):\s+extra.weight \(1,\)"):
        MlxBackend(cfg, dict(w, **{"extra.weight": np.zeros(1, np.float32)}))
    with pytest.raises(ValueError, match="unsupported dtype"):
        MlxBackend(cfg, w, dtype="int8")


def test_bad_frame_input_is_rejected(tiny, backend):
    _, _, tokens, mask = tiny
    backend.reset(1)
    with pytest.raises(ValueError, match=r"tokens must have shape \(1, S>=1, 33\)"):
        backend.generate_frame(tokens[None, :, :32], mask[None, :, :32], GREEDY)
    bad = tokens.copy()
    bad[0, 32] = 10**6
    with pytest.raises(ValueError, match="out of range"):
        backend.generate_frame(bad[None], mask[None], GREEDY)
    assert backend.position == 0


ON_GPU = mx.default_device().type == mx.gpu


@pytest.mark.skipif(
    not ON_GPU and not os.environ.get("CSM_MLX_COMPILE_TESTS"),
    reason="mx.compile on the CPU backend builds its kernels with the C++ compiler at first use (minutes); "
    "set CSM_MLX_COMPILE_TESTS=1 to run",
)
def test_compiled_frames_equal_eager(tiny):
    cfg, w, tokens, mask = tiny
    eager = MlxBackend(cfg, w, compile=False)
    compiled = MlxBackend(cfg, w, compile=True)
    np.testing.assert_array_equal(_greedy(compiled, tokens[None], mask[None], 3), _greedy(eager, tokens[None], mask[None], 3))
    p = SamplingParams(temperature=0.9, topk=50)
    for be in (eager, compiled):
        be.reset(1, seed=3)
    a = eager.generate_frame(tokens[None], mask[None], p)
    b = compiled.generate_frame(tokens[None], mask[None], p)
    np.testing.assert_array_equal(a, b)


def test_protocols_and_platform_choice(backend):
    from csm_core.protocols import FrameModel, LogitsProbe

    import csm_mlx

    assert isinstance(backend, FrameModel) and isinstance(backend, LogitsProbe)
    assert backend.name == "mlx" and csm_mlx.MlxBackend is MlxBackend
    import platform
    import sys

    assert csm_mlx.is_preferred() == (sys.platform == "darwin" and platform.machine() == "arm64")


def test_bf16_numpy_weights_load_bit_exact(tiny):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    cfg, w, tokens, mask = tiny
    w16 = {k: v.astype(ml_dtypes.bfloat16) for k, v in w.items()}  # as a bf16 checkpoint reads
    codes = np.zeros((1, cfg.audio_num_codebooks), np.int64)
    a = MlxBackend(cfg, w16, dtype="bfloat16").teacher_forced_logits(tokens[None], mask[None], codes)
    b = MlxBackend(cfg, w, dtype="bfloat16").teacher_forced_logits(tokens[None], mask[None], codes)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_prompt_prefix_in_the_cache_is_reused(tiny):
    """The next prompt repeats the last one and its frames (as the Generator builds the next
    sentence's prompt): only the new rows are fed, and the greedy frames still equal the uncached
    float64 numpy forward over the whole prompt."""
    cfg, w, tokens, mask = tiny
    K = cfg.audio_num_codebooks
    be = MlxBackend(cfg, w)
    first = _greedy(be, tokens[None], mask[None], 6)
    assert be.reused_positions == 0
    rows = [_audio_row(first[:, i]) for i in range(5)] + [_audio_row(np.zeros((1, K), np.int64))]
    text_t = np.zeros((1, 3, K + 1), np.int64)
    text_t[0, :, K] = [128000, 9906, 128001]
    text_m = np.zeros(text_t.shape, bool)
    text_m[0, :, K] = True
    tokens2 = np.concatenate([tokens[None]] + [t for t, _ in rows] + [text_t], 1)
    mask2 = np.concatenate([mask[None]] + [m for _, m in rows] + [text_m], 1)
    second = _greedy(be, tokens2, mask2, 6)
    assert be.reused_positions == tokens.shape[0] + 5 and be.position == tokens2.shape[1] + 5
    np.testing.assert_array_equal(second[0], R.greedy_frames(w, cfg, tokens2[0], mask2[0], 6))
    changed = tokens2.copy()
    changed[0, 1, K] += 1  # differs from its second row on: only the first row is kept
    third = _greedy(be, changed, mask2, 4)
    assert be.reused_positions == 1
    np.testing.assert_array_equal(third[0], R.greedy_frames(w, cfg, changed[0], mask2[0], 4))
    be.reuse_prefix = False
    _greedy(be, changed, mask2, 2)
    assert be.reused_positions == 0
    codes = np.random.default_rng(2).integers(0, 2048, (1, K))
    got, want = be.teacher_forced_logits(tokens[None], mask[None], codes), R.teacher_forced(w, cfg, tokens, mask, codes[0])
    np.testing.assert_allclose(got[0][0], want[0], atol=1e-4)
    np.testing.assert_allclose(got[1][0], want[1], atol=1e-4)


def test_generator_reuses_the_context_and_earlier_sentences_on_mlx(tiny):
    from csm_core import Segment
    from csm_core.generation import Generator
    from csm_core.testing.generation import FakeTokenizer

    cfg, w, _, _ = tiny
    context = [Segment(1, "Hello there.", codes=np.random.default_rng(0).integers(1, 2048, (cfg.audio_num_codebooks, 6)))]
    runs = []
    for reuse in (True, False):
        be = MlxBackend(cfg, w)
        be.reuse_prefix = reuse
        runs.append(Generator(be, FakeTokenizer()).generate("One two. Three four. Five six.", context=context,
                                                             temperature=0, max_audio_ms=480))
    on, off = runs
    np.testing.assert_array_equal(on.codes, off.codes)
    st = on.stats
    assert len(st.sentences) == 3 and off.stats.reused_prompt_frames == [0, 0, 0]
    assert st.reused_prompt_frames[0] == 0
    for j in (1, 2):
        assert st.reused_prompt_frames[j] >= st.prompt_frames[j - 1] + st.frames[j - 1] - 1
