"""Full-size CSM-1B (random weights): MLX fp32 against csm_core.reference, and bf16/fp16 agreement.

Slow (minutes, ~13 GB): run alone under `flock /work/bigmem.lock pytest -m slow tests/mlx/test_mlx_full.py -s`.
"""

import gc

import numpy as np
import pytest

pytest.importorskip("mlx.core")

from csm_core.config import csm_1b  # noqa: E402
from csm_core.protocols import SamplingParams  # noqa: E402
from csm_core.testing.csm import make_prompt, random_csm_weights  # noqa: E402
from csm_mlx.backend import MlxBackend  # noqa: E402


@pytest.mark.slow
def test_full_size_teacher_forced_parity():
    from csm_core.reference import CSMReference

    cfg = csm_1b()
    w = random_csm_weights(cfg, 0)
    tokens, mask = make_prompt(cfg, np.random.default_rng(0))
    ref = CSMReference(cfg, w)
    ref.reset(1)
    codes = ref.generate_frame(tokens, mask, SamplingParams(temperature=0))
    r_c0, r_depth = ref.teacher_forced_logits(tokens, mask, codes)
    del ref
    gc.collect()
    results = {}
    for dtype in ("float32", "bfloat16", "float16"):
        be = MlxBackend(cfg, w, dtype=dtype)
        c0, depth = be.teacher_forced_logits(tokens, mask, codes)
        err = max(np.abs(c0 - r_c0).max(), np.abs(depth - r_depth).max())
        top1 = np.mean(np.argmax(depth[0], -1) == np.argmax(r_depth[0], -1))
        cos = np.sum(depth * r_depth) / np.linalg.norm(depth) / np.linalg.norm(r_depth)
        results[dtype] = (err, top1, cos)
        print(f"full {dtype}: max |dlogit| {err:.3g} (scale {np.abs(r_depth).max():.3g}), depth cosine {cos:.6f}, "
              f"teacher-forced top-1 {top1:.3f}, c0 top-1 {np.argmax(c0) == np.argmax(r_c0)}")
        del be
        gc.collect()
    assert results["float32"][0] <= 1e-4 * max(1.0, float(np.abs(r_depth).max())) and results["float32"][1] == 1.0
    for dtype in ("bfloat16", "float16"):
        assert results[dtype][2] > 0.999 and results[dtype][1] >= 0.9
