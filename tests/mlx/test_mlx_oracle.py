"""MLX fp32 against the committed transformers oracle (tests/fixtures/csm_tiny_oracle.npz)."""

import numpy as np
import pytest

pytest.importorskip("mlx.core")

from csm_core.testing.csm import load_oracle, oracle_weights, run_frames  # noqa: E402
from csm_mlx.backend import MlxBackend  # noqa: E402


@pytest.fixture(scope="module")
def oracle():
    try:
        return load_oracle("csm_tiny")
    except FileNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def backend(oracle):
    return MlxBackend(oracle["config"], oracle_weights(oracle))


def test_teacher_forced_logits_match_oracle(oracle, backend):
    c0, depth = backend.teacher_forced_logits(oracle["tokens"], oracle["mask"], oracle["tf_codes"])
    err_c0 = np.abs(c0 - oracle["c0_logits"]).max()
    err_depth = np.abs(depth - oracle["depth_logits"]).max()
    print(f"fp32 vs oracle: c0 max|d| {err_c0:.2e}, depth max|d| {err_depth:.2e}")
    assert err_c0 <= 1e-4 and err_depth <= 1e-4


def test_greedy_frames_match_oracle(oracle, backend):
    ref = oracle["greedy_frames"][:12]
    got = run_frames(backend, oracle["tokens"], oracle["mask"], len(ref))[0]
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_against_oracle(oracle, dtype):
    be = MlxBackend(oracle["config"], oracle_weights(oracle), dtype=dtype)
    c0, depth = be.teacher_forced_logits(oracle["tokens"], oracle["mask"], oracle["tf_codes"])
    ref_c0, ref_depth = oracle["c0_logits"][0], oracle["depth_logits"][0]
    err = max(np.abs(c0[0] - ref_c0).max(), np.abs(depth[0] - ref_depth).max())
    top1 = np.mean(np.argmax(depth[0], -1) == np.argmax(ref_depth, -1))
    cos = np.sum(depth[0] * ref_depth) / np.linalg.norm(depth[0]) / np.linalg.norm(ref_depth)
    print(f"{dtype} vs oracle: max |dlogit| {err:.3g}, depth cosine {cos:.5f}, teacher-forced top-1 {top1:.2f}")
    assert cos > 0.999 and top1 >= 0.9
