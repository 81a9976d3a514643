"""The CSM training objective as transformers 5.24 computes it (`CsmForConditionalGeneration(labels=...)`).

Labels are [B, S, K] integers in transformers' expanded convention: the codes of an audio frame at
its own position, -100 where nothing is predicted (text frames, padding). A frame whose codebooks
1..K-1 are all -100 trains the backbone only (the processor's -101 "compute amortization" frames).

- backbone loss: cross-entropy of codebook0_head(h[t-1]) against labels[t, 0], mean over the
  labelled frames (ForCausalLMLoss: logits shifted one position, label -100 ignored);
- decoder loss: for every frame t whose codebooks 1..K-1 are labelled, the depth decoder is fed
  [h[t-1], c0..c(K-2)] (teacher forcing) and its K-1 logits are scored against c1..c(K-1); mean
  over all labelled (frame, codebook) entries;
- loss = backbone loss + decoder loss (unweighted sum, as transformers returns it).
All logits are upcast to float32 before the cross-entropy (transformers does the same).
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from ..model import CSMModel

__all__ = ["IGNORE", "NoCache", "LossTerms", "frame_labels", "amortize", "decoder_frames", "csm_loss"]

IGNORE = -100


class NoCache:
    """Stands in for a KVCache in a full-sequence (training) pass: positions start at 0, nothing is kept."""

    offset = 0

    def update_and_fetch(self, k: mx.array, v: mx.array) -> tuple[mx.array, mx.array]:
        return k, v


@dataclass
class LossTerms:
    loss: mx.array  # backbone + decoder
    backbone: mx.array
    decoder: mx.array
    frames: int  # labelled audio frames (backbone targets)
    decoder_frames: int  # frames the depth decoder was trained on


def frame_labels(tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Labels [B, S, K] int64 for a batch of frames: every audio frame (all K codebooks in the mask,
    the all-zero EOS frame included) is a target with its own codes; text and padding are -100.
    This is what transformers' processor makes with ``output_labels=True``."""
    tokens, mask = np.asarray(tokens), np.asarray(mask, bool)
    K = tokens.shape[-1] - 1
    audio = mask[..., :K].all(-1)  # [B, S]
    labels = np.where(audio[..., None], tokens[..., :K], IGNORE).astype(np.int64)
    return labels


def amortize(labels: np.ndarray, keep_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Compute amortization: the depth decoder is trained on a random ``keep_fraction`` of the audio
    frames; the others keep their codebook-0 label (backbone) and get -100 on codebooks 1..K-1.

    As the processor does it (``depth_decoder_labels_ratio``): int(n · (1 - keep_fraction)) frames of
    the batch's n audio frames are dropped, drawn uniformly; EOS frames (all codes 0) are never dropped.
    """
    if not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
    labels = np.array(labels, copy=True)
    audio = (labels[..., 1:] != IGNORE).any(-1) & (labels[..., 0] != IGNORE)
    eos = (labels == 0).all(-1)
    candidates = np.argwhere(audio & ~eos)  # [n, 2] (row, position)
    n_drop = int(len(candidates) * (1.0 - keep_fraction))
    if n_drop:
        drop = candidates[rng.permutation(len(candidates))[:n_drop]]
        labels[drop[:, 0], drop[:, 1], 1:] = IGNORE
    return labels


def decoder_frames(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, positions) of the frames the depth decoder trains on, in row-major order (transformers' order)."""
    labels = np.asarray(labels)
    train = ~(labels[..., 1:] == IGNORE).all(-1)
    rows, pos = np.nonzero(train)
    if (pos == 0).any():
        raise ValueError("a labelled frame at position 0 has no previous position to predict it from")
    return rows, pos


def _check_labels(labels: np.ndarray, tokens_shape: tuple, K: int, V: int) -> None:
    if labels.shape != (*tokens_shape[:2], K):
        raise ValueError(f"labels must be [B, S, K={K}] for tokens {tokens_shape}, got {labels.shape}")
    live = labels[labels != IGNORE]
    if live.size and (live.min() < 0 or live.max() >= V):
        raise ValueError(f"label codes must be in 0..{V - 1} or {IGNORE}")


def _mean_ce(logits: mx.array, targets: np.ndarray) -> tuple[mx.array, int]:
    """Mean cross-entropy (float32) over entries whose target is not -100; logits [..., V], targets [...]."""
    valid = targets != IGNORE
    n = int(valid.sum())
    if n == 0:
        raise ValueError("no labelled targets in this batch")
    logits = logits.astype(mx.float32)
    t = mx.array(np.where(valid, targets, 0).astype(np.int32))
    picked = mx.take_along_axis(logits, t[..., None], axis=-1)[..., 0]
    ce = mx.logsumexp(logits, axis=-1) - picked
    return (ce * mx.array(valid)).sum() / n, n


def backbone_hidden(model: CSMModel, tokens: mx.array, mask: mx.array) -> mx.array:
    """Full-sequence causal pass from position 0: tokens/mask [B, S, K+1] → normed hidden [B, S, Db]."""
    x = model.embed_frames(tokens, mask)
    return model.backbone(x, [NoCache()] * len(model.backbone.layers), "causal")


def depth_logits(model: CSMModel, last_h: mx.array, codes: mx.array) -> mx.array:
    """Teacher-forced depth decoder without a cache: last_h [N, Db], codes [N, K] → [N, K-1, V]."""
    K, V = model.config.audio_num_codebooks, model.config.audio_vocab_size
    offsets = mx.arange(K - 1, dtype=mx.int32) * V
    emb = model.audio_embeddings(codes[:, : K - 1] + offsets)  # [N, K-1, Db]
    x = model.projection(mx.concatenate([last_h[:, None, :], emb], axis=1))  # [N, K, Dd]
    h = model.decoder(x, [NoCache()] * len(model.decoder.layers), "causal")[:, 1:]  # [N, K-1, Dd]
    return mx.einsum("bkd,kdv->bkv", h, model.audio_head)


def csm_loss(model: CSMModel, tokens, mask, labels) -> LossTerms:
    """The transformers CSM loss of a batch: tokens int / mask bool [B, S, K+1], labels [B, S, K] (numpy)."""
    K, V = model.config.audio_num_codebooks, model.config.audio_vocab_size
    labels = np.asarray(labels)
    tokens_np, mask_np = np.asarray(tokens), np.asarray(mask, bool)
    _check_labels(labels, tokens_np.shape, K, V)
    tokens_np = np.where(mask_np, tokens_np, 0).astype(np.int32)
    h = backbone_hidden(model, mx.array(tokens_np), mx.array(mask_np))  # [B, S, Db]
    # backbone: position t-1 predicts codebook 0 of frame t
    c0_logits = model.codebook0_head(h[:, :-1])  # [B, S-1, V]
    backbone, n_frames = _mean_ce(c0_logits, labels[:, 1:, 0])
    rows, pos = decoder_frames(labels)
    if len(rows) == 0:
        raise ValueError("no frame trains the depth decoder (every frame's codebooks 1..K-1 are -100)")
    last_h = h[mx.array(rows), mx.array(pos - 1)]  # [N, Db]
    frame_codes = labels[rows, pos]  # [N, K]
    logits = depth_logits(model, last_h, mx.array(frame_codes.clip(0).astype(np.int32)))
    decoder, _ = _mean_ce(logits, frame_codes[:, 1:])
    return LossTerms(backbone + decoder, backbone, decoder, n_frames, len(rows))
