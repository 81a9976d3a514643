"""CpuBackend against the oracle fixture (HF transformers outputs on the same random weights)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from csm_core.config import csm_tiny
from csm_core.protocols import FrameModel, LogitsProbe, SamplingParams
from csm_core.testing.csm import frame_row, load_oracle, make_prompt, oracle_weights, random_csm_weights, run_frames
from csm_cpu.backend import CpuBackend
from csm_cpu.weights import WeightError


@pytest.fixture(scope="module")
def oracle():
    o = load_oracle("csm_tiny")
    o["weights"] = oracle_weights(o)
    return o


@pytest.mark.parametrize("threads", [1, 2])
def test_fp32_parity_with_oracle(oracle, threads):
    be = CpuBackend(oracle["config"], oracle["weights"], "f32", threads=threads)
    assert isinstance(be, FrameModel) and isinstance(be, LogitsProbe)
    c0, depth = be.teacher_forced_logits(oracle["tokens"], oracle["mask"], oracle["tf_codes"])
    assert np.abs(c0 - oracle["c0_logits"]).max() <= 1e-4
    assert np.abs(depth - oracle["depth_logits"]).max() <= 1e-4
    want = oracle["greedy_frames"]
    assert want.shape[0] >= 10
    got = run_frames(be, oracle["tokens"], oracle["mask"], want.shape[0])
    np.testing.assert_array_equal(got[0], want)


@pytest.mark.parametrize("quant,min_top1,max_err", [("bf16", 0.95, 0.02), ("q8_0", 0.85, 0.05), ("q4_0", 0.45, 0.4)])
def test_quantized_teacher_forced_agreement(oracle, quant, min_top1, max_err):
    """Top-1 agreement and logit error vs fp32 (random weights give flat logits: pessimistic).
    Measured on this fixture: bf16 1.00 / 0.003, q8_0 0.96 / 0.013, q4_0 0.62 / 0.14."""
    cfg, w = oracle["config"], oracle["weights"]
    ref = CpuBackend(cfg, w, "f32", threads=1)
    be = CpuBackend(cfg, w, quant, threads=1)
    rng = np.random.default_rng(0)
    agree, err = [], []
    for _ in range(4):
        tokens, mask = make_prompt(cfg, rng)
        codes = rng.integers(0, 2048, (1, 32)).astype(np.int32)
        a, b = (np.concatenate([c0, depth[0]]) for c0, depth in
                (m.teacher_forced_logits(tokens, mask, codes) for m in (ref, be)))  # [K, V] each
        agree.append(np.mean(a.argmax(-1) == b.argmax(-1)))
        err.append(np.abs(a - b).max())
    print(f"{quant}: teacher-forced top-1 agreement {np.mean(agree):.3f}, max |logit error| {max(err):.4f}")
    assert np.mean(agree) >= min_top1 and max(err) <= max_err


def test_q4_k_model_is_closer_to_fp32_than_q4_0(k_quant_config):
    """A config whose matrices all have rows of a multiple of 256 (so every one is Q4_K; CSM-1B's
    are): teacher-forced logits sit closer to fp32 than Q4_0's at the same 4.5 bits per weight.
    Rows that cannot be Q4_K (a tiny config's) fall back to Q8_0."""
    cfg = k_quant_config
    w = random_csm_weights(cfg, 11)
    ref = CpuBackend(cfg, w, "f32", threads=2)
    models = {q: CpuBackend(cfg, w, q, threads=2) for q in ("q4_0", "q4_k")}
    fmts = {n: t.fmt for n, t in models["q4_k"]._weights.items() if hasattr(t, "fmt")}
    assert {f for n, f in fmts.items() if not n.endswith("_embeddings.weight")} == {"q4_k"}
    assert {fmts["text_embeddings.weight"], fmts["audio_embeddings.weight"]} == {"q8_0"}
    rng = np.random.default_rng(3)
    err = {q: [] for q in models}
    for _ in range(3):
        tokens, mask = make_prompt(cfg, rng)
        codes = rng.integers(0, 2048, (1, 8)).astype(np.int32)
        a = np.concatenate([(lg := ref.teacher_forced_logits(tokens, mask, codes))[0], lg[1][0]])
        for q, m in models.items():
            c0, depth = m.teacher_forced_logits(tokens, mask, codes)
            err[q].append(np.abs(np.concatenate([c0, depth[0]]) - a).mean())
    print({q: float(np.mean(e)) for q, e in err.items()})
    assert np.mean(err["q4_k"]) < 0.9 * np.mean(err["q4_0"])
    tiny = CpuBackend(csm_tiny(), random_csm_weights(csm_tiny(), 1), "q4_k", threads=1)
    assert {t.fmt for t in tiny._weights.values() if hasattr(t, "fmt")} == {"q8_0"}  # rows of 32/64/128


@pytest.mark.parametrize("quant", ["q8_0", "q4_0"])
def test_legacy_prefill_kernels_give_the_same_frames(oracle, quant, monkeypatch):
    """legacy_prefill (the kernels from before the prefill rework, kept for before/after
    benchmarks) changes no result: the same prompt gives the same logits and sampled frames bit
    for bit, whether set on the backend or through $CSM_CPU_PREFILL; a bad value is an error."""
    cfg, w = oracle["config"], oracle["weights"]
    tokens, mask = oracle["tokens"], oracle["mask"]
    params = SamplingParams(temperature=0.9, topk=50)
    be = CpuBackend(cfg, w, quant, threads=2)
    assert not be.legacy_prefill
    new = be.teacher_forced_logits(tokens, mask, oracle["tf_codes"]), run_frames(be, tokens, mask, 3, params, seed=2)
    be.legacy_prefill = True
    old = be.teacher_forced_logits(tokens, mask, oracle["tf_codes"]), run_frames(be, tokens, mask, 3, params, seed=2)
    monkeypatch.setenv("CSM_CPU_PREFILL", "legacy")
    env = CpuBackend(cfg, w, quant, threads=2)
    assert env.legacy_prefill
    for got in (old, (env.teacher_forced_logits(tokens, mask, oracle["tf_codes"]),
                      run_frames(env, tokens, mask, 3, params, seed=2))):
        np.testing.assert_array_equal(got[0][0], new[0][0])
        np.testing.assert_array_equal(got[0][1], new[0][1])
        np.testing.assert_array_equal(got[1], new[1])
    monkeypatch.setenv("CSM_CPU_PREFILL", "old")
    with pytest.raises(ValueError, match="CSM_CPU_PREFILL"):
        CpuBackend(cfg, w, quant, threads=1)


@pytest.mark.parametrize("quant", ["f32", "q8_0", "q4_k"])
def test_work_split_is_exact(quant, monkeypatch):
    """Matrices large enough to split into many work items (320 KiB - 2 MiB): the logits are
    bit-identical for any item size and thread count (each row's product is one kernel call),
    and fp32 matches the numpy reference."""
    from csm_core.config import CSMConfig, LlamaConfig
    from csm_core.reference import CSMReference

    flavors = {"mid-b": LlamaConfig(num_layers=1, num_heads=4, num_kv_heads=2, embed_dim=256, intermediate_dim=1024),
               "mid-d": LlamaConfig(num_layers=1, num_heads=4, num_kv_heads=2, embed_dim=128, intermediate_dim=2048)}
    cfg = CSMConfig(backbone_flavor="mid-b", decoder_flavor="mid-d", text_vocab_size=4096, audio_num_codebooks=4,
                    custom_flavors=flavors)
    w = random_csm_weights(cfg, 5)
    rng = np.random.default_rng(2)
    tokens, mask = make_prompt(cfg, rng, context=((3, 2),), target_text_len=3)
    codes = rng.integers(0, 2048, (1, 4)).astype(np.int32)
    runs = []
    for kib, threads in ((32, 1), (32, 2), (256, 2), (4096, 2)):
        monkeypatch.setenv("CSM_CPU_CHUNK_KIB", str(kib))
        runs.append(CpuBackend(cfg, w, quant, threads=threads).teacher_forced_logits(tokens, mask, codes))
    for c0, depth in runs[1:]:
        np.testing.assert_array_equal(c0, runs[0][0])
        np.testing.assert_array_equal(depth, runs[0][1])
    if quant == "f32":
        ref = CSMReference(cfg, w).teacher_forced_logits(tokens, mask, codes)
        assert np.abs(runs[0][0] - ref[0]).max() <= 1e-4 and np.abs(runs[0][1] - ref[1]).max() <= 1e-4
    monkeypatch.setenv("CSM_CPU_CHUNK_KIB", "8")
    with pytest.raises(ValueError, match="CSM_CPU_CHUNK_KIB"):
        CpuBackend(cfg, w, quant, threads=1)


@pytest.mark.parametrize("quant", ["f32", "q4_0"])
def test_prompt_prefix_in_the_cache_is_reused_exactly(oracle, quant):
    """A prompt that repeats what the cache holds (the context and the sentence just generated,
    as the Generator builds the next sentence's prompt) only runs its new rows, and gives the very
    frames a fresh backend gives, sampled with the same seed."""
    from csm_core.protocols import SamplingParams

    cfg, w = oracle["config"], oracle["weights"]
    tokens, mask = oracle["tokens"], oracle["mask"]
    S, K = tokens.shape[1], cfg.audio_num_codebooks
    params = SamplingParams(temperature=0.9, topk=50)
    be = CpuBackend(cfg, w, quant, threads=2)
    first = run_frames(be, tokens, mask, 6, params, seed=3)
    assert be.reused_positions == 0
    # next prompt: the same prompt, the 5 frames fed back, an EOS frame, then 3 new text rows
    rows_t, rows_m = [tokens], [mask]
    for codes in first[0, :5]:
        rows_t.append(frame_row(codes[None])[0])
        rows_m.append(frame_row(codes[None])[1])
    eos_t, eos_m = frame_row(np.zeros((1, K), np.int32))
    text_t = np.zeros((1, 3, K + 1), np.int64)
    text_t[0, :, K] = [128000, 9906, 128001]
    text_m = np.zeros((1, 3, K + 1), bool)
    text_m[0, :, K] = True
    tokens2, mask2 = np.concatenate(rows_t + [eos_t, text_t], 1), np.concatenate(rows_m + [eos_m, text_m], 1)
    second = run_frames(be, tokens2, mask2, 6, params, seed=4)
    assert be.reused_positions == S + 5
    fresh = CpuBackend(cfg, w, quant, threads=2)
    np.testing.assert_array_equal(second, run_frames(fresh, tokens2, mask2, 6, params, seed=4))
    # a prompt that differs from its first row on reuses nothing, and still matches a fresh run
    tokens3 = tokens2.copy()
    tokens3[0, 0, K] += 1
    third = run_frames(be, tokens3, mask2, 4, params, seed=5)
    assert be.reused_positions == 0
    np.testing.assert_array_equal(third, run_frames(fresh, tokens3, mask2, 4, params, seed=5))
    # teacher forcing after generation: same logits as on a fresh backend
    codes = oracle["tf_codes"]
    got, want = be.teacher_forced_logits(tokens, mask, codes), fresh.teacher_forced_logits(tokens, mask, codes)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_generator_reuses_the_context_and_earlier_sentences(oracle):
    """Sentence by sentence, each prompt repeats the previous one plus the sentence just spoken:
    the backend runs only the new rows, and the codes equal a run that recomputes everything."""
    from csm_core import Segment
    from csm_core.generation import Generator
    from csm_core.testing.generation import FakeTokenizer

    cfg, w = oracle["config"], oracle["weights"]
    context = [Segment(1, "Hello there.", codes=np.random.default_rng(0).integers(1, 2048, (32, 6)))]
    runs = []
    for reuse in (True, False):
        be = CpuBackend(cfg, w, "q8_0", threads=2)
        be.reuse_prefix = reuse
        gen = Generator(be, FakeTokenizer())
        runs.append(gen.generate("One two. Three four. Five six.", context=context, seed=7, max_audio_ms=480))
    on, off = runs
    np.testing.assert_array_equal(on.codes, off.codes)
    st = on.stats
    assert len(st.sentences) == 3 and off.stats.reused_prompt_frames == [0, 0, 0]
    assert st.reused_prompt_frames[0] == 0
    for j in (1, 2):  # the previous prompt and all its frames but an unfed last one are kept
        assert st.reused_prompt_frames[j] >= st.prompt_frames[j - 1] + st.frames[j - 1] - 1


def test_batch_with_left_padding_matches_single_rows(oracle):
    """Rows of different prompt lengths, left-padded, give each row's batch-1 greedy frames."""
    cfg, w = oracle["config"], oracle["weights"]
    rng = np.random.default_rng(5)
    prompts = [make_prompt(cfg, rng, context=ctx, target_text_len=t) for ctx, t in
               [(((3, 2),), 4), (((7, 5), (6, 4)), 8), (((2, 1),), 2)]]
    S = max(p[0].shape[1] for p in prompts)
    tokens = np.zeros((3, S, 33), np.int64)
    mask = np.zeros((3, S, 33), bool)
    for b, (t, m) in enumerate(prompts):
        tokens[b, S - t.shape[1]:], mask[b, S - t.shape[1]:] = t[0], m[0]
    be = CpuBackend(cfg, w, "f32", threads=2)
    batched = run_frames(be, tokens, mask, 6)
    for b, (t, m) in enumerate(prompts):
        np.testing.assert_array_equal(batched[b], run_frames(be, t, m, 6)[0])


def test_sampling_is_seeded_and_masks_undecodable(oracle):
    be = CpuBackend(oracle["config"], oracle["weights"], "q8_0", threads=2)
    params = SamplingParams(temperature=1.5, topk=2051, mask_undecodable=True)
    a = run_frames(be, oracle["tokens"], oracle["mask"], 4, params, seed=7)
    b = run_frames(be, oracle["tokens"], oracle["mask"], 4, params, seed=7)
    c = run_frames(be, oracle["tokens"], oracle["mask"], 4, params, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.max() < 2048 and len(np.unique(a)) > 50


def test_bad_inputs_raise_clear_errors(oracle):
    cfg, w = oracle["config"], oracle["weights"]
    with pytest.raises(ValueError, match="unsupported quantization 'int3'"):
        CpuBackend(cfg, w, "int3")
    bad = dict(w)
    bad["decoder.layers.1.mlp.w2.weight"] = bad["decoder.layers.1.mlp.w2.weight"].copy()
    bad["decoder.layers.1.mlp.w2.weight"][3, 4] = np.nan
    with pytest.raises(WeightError, match="decoder.layers.1.mlp.w2.weight.*NaN"):
        CpuBackend(cfg, bad, "q8_0")
    bad = {k: v for k, v in w.items() if k != "projection.weight"}
    with pytest.raises(WeightError, match="missing weight 'projection.weight'"):
        CpuBackend(cfg, bad)
    bad = dict(w, **{"codebook0_head.weight": w["codebook0_head.weight"][:, :10]})
    with pytest.raises(WeightError, match="codebook0_head.weight.*shape"):
        CpuBackend(cfg, bad)
    be = CpuBackend(cfg, w, "f32", threads=1)
    p = SamplingParams(temperature=0)
    t, m = oracle["tokens"], oracle["mask"]
    with pytest.raises(ValueError, match="tokens must have shape"):
        be.generate_frame(t[:, :, :10], m[:, :, :10], p)
    with pytest.raises(ValueError, match="mask must be boolean"):
        be.generate_frame(t, m.astype(np.int64), p)
    with pytest.raises(ValueError, match=r"audio code 10000000 at tokens\[0, \d+, 0\] is out of range"):
        be.generate_frame(np.where(m, 10**7, 0), m, p)
    with pytest.raises(ValueError, match="exceed the 2048-position context"):
        be.generate_frame(np.zeros((1, 2049, 33), np.int64), np.ones((1, 2049, 33), bool), p)
    be.reset(1)
    be.generate_frame(np.zeros((1, 2040, 33), np.int64), np.ones((1, 2040, 33), bool), p)
    with pytest.raises(ValueError, match="at position 2040 exceed"):
        be.generate_frame(np.zeros((1, 9, 33), np.int64), np.ones((1, 9, 33), bool), p)


def test_portable_path_in_a_subprocess():
    """The same kernel and parity tests with CSM_CPU_ISA=portable (the path every CPU has)."""
    here = Path(__file__).parent
    env = dict(os.environ, CSM_CPU_ISA="portable")
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(here / "test_matvec.py"),
         str(here / "test_ops.py"), f"{here / 'test_backend.py'}::test_fp32_parity_with_oracle",
         "-k", "not portable"],
        env=env, capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    check = subprocess.run([sys.executable, "-c", "import csm_cpu; print(csm_cpu.cpu_features()['active'])"],
                           env=env, capture_output=True, text=True)
    assert check.stdout.strip() == "portable"


def test_avx512_path_in_a_subprocess():
    """The parity and slot tests with CSM_CPU_ISA=avx512 (engines built on that path), where the
    CPU runs it; elsewhere skipped (tools/device_cpu_check.sh runs the whole of tests/cpu so)."""
    from csm_cpu.features import supported_isas

    if "avx512" not in supported_isas():
        pytest.skip(f"avx512 not runnable here (supported: {supported_isas()})")
    here = Path(__file__).parent
    env = dict(os.environ, CSM_CPU_ISA="avx512")
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(here / "test_backend.py"),
         str(here / "test_slots.py"), "-k", "not in_a_subprocess"],
        env=env, capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    check = subprocess.run([sys.executable, "-c", "import csm_cpu; print(csm_cpu.cpu_features()['active'])"],
                           env=env, capture_output=True, text=True)
    assert check.stdout.strip() == "avx512"


@pytest.mark.slow
def test_full_size_fp32_matches_numpy_reference():
    """CSM-1B shapes: fp32 logits vs csm_core's numpy reference, q8_0 greedy agreement reported."""
    from csm_core.config import csm_1b
    from csm_core.reference import CSMReference

    cfg = csm_1b()
    w = random_csm_weights(cfg, 11)
    tokens, mask = make_prompt(cfg, np.random.default_rng(0), context=((4, 3),), target_text_len=4)
    codes = np.random.default_rng(1).integers(0, 2048, (1, 32)).astype(np.int32)
    ref = CSMReference(cfg, w).teacher_forced_logits(tokens, mask, codes)
    got = CpuBackend(cfg, w, "f32").teacher_forced_logits(tokens, mask, codes)
    assert np.abs(got[0] - ref[0]).max() <= 1e-4
    assert np.abs(got[1] - ref[1]).max() <= 1e-4


def test_thread_count_from_the_environment(monkeypatch):
    from csm_cpu.backend import default_threads

    monkeypatch.setenv("CSM_NUM_THREADS", "3")
    assert default_threads() == 3
    for bad, msg in (("two", "not an integer"), ("0", ">= 1")):
        monkeypatch.setenv("CSM_NUM_THREADS", bad)
        with pytest.raises(ValueError, match=msg):
            default_threads()
    monkeypatch.delenv("CSM_NUM_THREADS")
    assert default_threads() >= 1
