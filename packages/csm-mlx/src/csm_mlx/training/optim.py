"""AdamW with float32 master weights and moments (the model may hold bf16), warm-up + cosine, clipping."""

from __future__ import annotations

import math

import mlx.core as mx

__all__ = ["AdamW", "lr_at", "clip_by_global_norm"]


def lr_at(step: int, base_lr: float, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up over ``warmup`` steps
    (step 0 already gets base_lr / warmup, so no step is wasted), then cosine down to min_ratio · base_lr."""
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return base_lr * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def clip_by_global_norm(grads: dict[str, mx.array], max_norm: float | None) -> tuple[dict[str, mx.array], mx.array]:
    """Scale all gradients so their joint L2 norm is at most ``max_norm`` (None: no clipping). Returns (grads, norm)."""
    norm = mx.sqrt(sum(mx.sum(mx.square(g.astype(mx.float32))) for g in grads.values()))
    if max_norm is None:
        return grads, norm
    factor = mx.minimum(1.0, max_norm / (norm + 1e-6))
    return {k: g * factor for k, g in grads.items()}, norm


class AdamW:
    """torch.optim.AdamW semantics (decoupled weight decay, bias correction) on float32 state.

    ``master`` holds float32 copies of the trained tensors; ``step()`` returns the new values cast to
    each tensor's model dtype, for ``model.update``.
    """

    def __init__(self, params: dict[str, mx.array], betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        self.betas, self.eps, self.weight_decay = betas, eps, weight_decay
        self.dtypes = {k: v.dtype for k, v in params.items()}
        self.master = {k: v.astype(mx.float32) for k, v in params.items()}
        self.m = {k: mx.zeros(v.shape, mx.float32) for k, v in params.items()}
        self.v = {k: mx.zeros(v.shape, mx.float32) for k, v in params.items()}
        self.t = 0

    def step(self, grads: dict[str, mx.array], lr: float) -> dict[str, mx.array]:
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1.0 - b1**self.t, 1.0 - b2**self.t
        out = {}
        for k, g in grads.items():
            g = g.astype(mx.float32)
            p = self.master[k]
            if self.weight_decay:
                p = p * (1.0 - lr * self.weight_decay)
            self.m[k] = b1 * self.m[k] + (1.0 - b1) * g
            self.v[k] = b2 * self.v[k] + (1.0 - b2) * mx.square(g)
            p = p - lr * (self.m[k] / c1) / (mx.sqrt(self.v[k] / c2) + self.eps)
            self.master[k] = p
            out[k] = p.astype(self.dtypes[k])
        return out

    def state(self) -> dict[str, mx.array]:
        return {**{f"master.{k}": v for k, v in self.master.items()}, **{f"m.{k}": v for k, v in self.m.items()},
                **{f"v.{k}": v for k, v in self.v.items()}}

    def load_state(self, arrays: dict[str, mx.array], t: int) -> None:
        for k in self.master:
            for prefix, table in (("master", self.master), ("m", self.m), ("v", self.v)):
                name = f"{prefix}.{k}"
                if name not in arrays or arrays[name].shape != table[k].shape:
                    raise ValueError(f"checkpoint lacks optimizer tensor {name} of shape {table[k].shape}")
                table[k] = arrays[name].astype(mx.float32)
        self.t = t

    def params(self) -> dict[str, mx.array]:
        return {k: p.astype(self.dtypes[k]) for k, p in self.master.items()}
