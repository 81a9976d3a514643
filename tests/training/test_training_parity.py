"""The MLX CSM loss and its gradients against transformers 5.24 `CsmForConditionalGeneration(labels=...)`,
fp32, tiny random weights, same batch and the same amortization mask."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core")
nn = pytest.importorskip("mlx.nn")

from mlx.utils import tree_flatten  # noqa: E402

from csm_core.testing.csm import random_csm_weights  # noqa: E402
from csm_mlx.model import CSMModel  # noqa: E402
from csm_mlx.training.loss import amortize, csm_loss, decoder_frames, frame_labels  # noqa: E402

from training_helpers import tiny_batch, tiny_config  # noqa: E402

TOOL = Path(__file__).resolve().parents[2] / "tools" / "make_reference.py"


def load_tool():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    spec = importlib.util.spec_from_file_location("make_reference", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    found = {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__}
    if found != tool.REQUIRED:
        pytest.skip(f"oracle pinned to {tool.REQUIRED}, found {found}")
    return tool


@pytest.fixture(scope="module")
def case():
    cfg = tiny_config()
    weights = random_csm_weights(cfg, 11)
    tokens, mask = tiny_batch(cfg, 12)
    labels = amortize(frame_labels(tokens, mask), 0.5, np.random.default_rng(13))
    return cfg, weights, tokens, mask, labels


def test_labels_follow_the_processor_convention(case):
    cfg, _, tokens, mask, labels = case
    K = cfg.audio_num_codebooks
    audio = mask[..., :K].all(-1)
    assert (labels[~audio] == -100).all()  # text and padding: nothing to predict
    np.testing.assert_array_equal(labels[audio][:, 0], tokens[audio][:, 0])  # backbone: every audio frame
    rows, pos = decoder_frames(labels)
    eos = audio & (tokens[..., :K] == 0).all(-1)
    n_audio = int((audio & ~eos).sum())
    assert len(rows) == int(eos.sum()) + n_audio - int(n_audio * 0.5)  # EOS frames always trained
    assert eos[rows, pos].sum() == eos.sum()


@pytest.mark.reference
def test_loss_and_gradients_match_transformers(case):
    torch = pytest.importorskip("torch")
    tool = load_tool()
    cfg, weights, tokens, mask, labels = case

    hf = tool.build_model(cfg, weights)
    hf.train()  # dropout is 0 in CSM configs; train mode as a fine-tune runs it
    emb = tool.embed_frames(hf, tokens, mask)
    out = hf(inputs_embeds=emb, labels=torch.from_numpy(labels), use_cache=False)
    out.loss.backward()
    out = type(out)(**{k: v.detach() if hasattr(v, "detach") else v for k, v in out.items()})
    hf_grads = {n: p.grad.numpy() for n, p in hf.named_parameters(remove_duplicate=False) if not n.startswith("codec_model.")}

    model = CSMModel(cfg).load_canonical(weights, "float32")

    def loss_fn(m):
        t = csm_loss(m, tokens, mask, labels)
        return t.loss, (t.backbone, t.decoder)

    (loss, (backbone, decoder)), grads = nn.value_and_grad(model, loss_fn)(model)
    mx.eval(loss, backbone, decoder, grads)
    loss_rel = 0.0
    for name, ours, ref in (
        ("total", loss, out.loss), ("backbone", backbone, out.backbone_loss), ("decoder", decoder, out.depth_decoder_loss),
    ):
        ours, ref = float(ours), ref.item()
        loss_rel = max(loss_rel, abs(ours - ref) / abs(ref))
        assert abs(ours - ref) <= 1e-5 * abs(ref), f"{name} loss {ours} vs transformers {ref}"

    ours = tool.canonical_to_hf({k: np.array(v) for k, v in tree_flatten(grads)}, cfg)
    assert set(ours) == set(hf_grads), sorted(set(ours) ^ set(hf_grads))[:5]
    worst = 0.0
    for name, ref in hf_grads.items():
        rel = np.linalg.norm(ours[name] - ref) / np.linalg.norm(ref)
        worst = max(worst, rel)
        assert rel <= 1e-4, f"{name}: gradient relative L2 error {rel:.2e}"
    print(f"loss {float(loss):.6f} (backbone {float(backbone):.6f}, decoder {float(decoder):.6f}); "
          f"worst loss rel error {loss_rel:.1e}, worst gradient rel L2 {worst:.2e} over {len(hf_grads)} tensors")
