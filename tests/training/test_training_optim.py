"""AdamW (float32 state), the warm-up + cosine schedule and global-norm clipping."""

from __future__ import annotations

import math

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core")

from csm_mlx.training.optim import AdamW, clip_by_global_norm, lr_at  # noqa: E402


def test_schedule_warms_up_then_follows_a_cosine():
    lrs = [lr_at(s, 1e-3, warmup=4, total=14, min_ratio=0.1) for s in range(14)]
    np.testing.assert_allclose(lrs[:4], [2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert lrs[4] == pytest.approx(1e-3)
    mid = 4 + 5  # halfway through the cosine
    assert lrs[mid] == pytest.approx(1e-4 + 0.9e-3 * 0.5)
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:]))
    assert lr_at(13, 1e-3, 0, 13) == pytest.approx(0.0)


def test_clipping_scales_to_the_global_norm():
    grads = {"a": mx.array([3.0, 0.0]), "b": mx.array([[4.0]])}
    clipped, norm = clip_by_global_norm(grads, 1.0)
    assert float(norm) == pytest.approx(5.0)
    total = math.sqrt(sum(float((v * v).sum()) for v in clipped.values()))
    assert total == pytest.approx(1.0, rel=1e-5)
    same, _ = clip_by_global_norm(grads, 10.0)
    assert all(mx.array_equal(same[k], grads[k]) for k in grads)


@pytest.mark.reference
def test_adamw_matches_torch_on_float32_state_over_bf16_weights():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((5, 3)).astype(np.float32)
    grads = [rng.standard_normal((5, 3)).astype(np.float32) for _ in range(4)]
    p = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    ref = torch.optim.AdamW([p], lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    ours = AdamW({"w": mx.array(w0).astype(mx.bfloat16)}, betas=(0.9, 0.95), weight_decay=0.1)
    ours.master["w"] = mx.array(w0)  # the same float32 start (bf16 weights would round it)
    for g in grads:
        p.grad = torch.from_numpy(g)
        ref.step()
        new = ours.step({"w": mx.array(g)}, 1e-2)
    np.testing.assert_allclose(np.array(ours.master["w"]), p.detach().numpy(), rtol=1e-6, atol=1e-7)
    assert new["w"].dtype == mx.bfloat16 and ours.m["w"].dtype == mx.float32
