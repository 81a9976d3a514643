"""LoRA and the training loop on tiny random models (MLX fp32): zero adapters change nothing, 50 steps
memorize one example, adapters save/load/merge to the same logits, and a resumed run repeats the curve."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core")

from csm_core.testing.csm import make_prompt, random_csm_weights, run_frames  # noqa: E402
from csm_mlx.backend import MlxBackend  # noqa: E402
from csm_mlx.model import CSMModel  # noqa: E402
from csm_mlx.training.lora import (  # noqa: E402
    AdapterError, LoraConfig, apply_lora, attach_adapter, load_adapter, lora_layers, merge_adapter_weights, merge_lora,
)
from csm_mlx.training.loss import amortize, csm_loss, frame_labels  # noqa: E402
from csm_mlx.training.trainer import Example, TrainConfig, Trainer, read_curve  # noqa: E402

from training_helpers import tiny_batch, tiny_config  # noqa: E402

TEXT = 6  # text frames before the audio of the memorized example
AUDIO = 8


@pytest.fixture(scope="module")
def base():
    cfg = tiny_config()
    return cfg, random_csm_weights(cfg, 3)


def _model(cfg, weights):
    return CSMModel(cfg).load_canonical(weights, "float32")


def test_zero_adapters_leave_the_loss_unchanged(base):
    cfg, w = base
    tokens, mask = tiny_batch(cfg, 4)
    labels = amortize(frame_labels(tokens, mask), 0.5, np.random.default_rng(5))
    full = csm_loss(_model(cfg, w), tokens, mask, labels)
    model = _model(cfg, w)
    names = apply_lora(model, LoraConfig(rank=4, dropout=0.1))
    assert len(names) == 7 * (cfg.backbone.num_layers + cfg.decoder.num_layers)
    lora = csm_loss(model, tokens, mask, labels)  # dropout acts on the adapter path only: B = 0 hides it
    for a, b in ((full.loss, lora.loss), (full.backbone, lora.backbone), (full.decoder, lora.decoder)):
        assert float(a) == float(b)
    # only the adapters train
    trainable = {k for k, _ in __import__("mlx.utils").utils.tree_flatten(model.trainable_parameters())}
    assert trainable and all(k.endswith(("lora_a", "lora_b")) for k in trainable)


@pytest.fixture(scope="module")
def memorized(base, tmp_path_factory):
    """50 LoRA steps (rank 8, heads trainable) on one example: text frames, then AUDIO audio frames + EOS."""
    cfg, w = base
    tokens, mask = make_prompt(cfg, np.random.default_rng(7), context=((TEXT, AUDIO),), target_text_len=0)
    out = tmp_path_factory.mktemp("lora_run")
    tc = TrainConfig(steps=50, lr=1e-2, decoder_fraction=1.0, eval_every=25, save_every=50,
                     lora=LoraConfig(rank=8, alpha=16, train=("heads",)))
    model = _model(cfg, w)
    ex = Example(tokens[0], mask[0], "one")
    rows = Trainer(model, [ex], [ex], tc, out, log=lambda s: None).run()
    return cfg, w, tokens, mask, model, rows, out


def test_fifty_lora_steps_memorize_one_example(memorized):
    cfg, _, tokens, mask, model, rows, out = memorized
    first, last = rows[0]["loss"], rows[-1]["loss"]
    print(f"loss {first:.3f} -> {last:.3f} ({1 - last / first:.1%} down)")
    assert last <= 0.1 * first
    K = cfg.audio_num_codebooks
    frames = run_frames(MlxBackend(cfg, model=model), tokens[:, :TEXT], mask[:, :TEXT], AUDIO + 1)[0]
    np.testing.assert_array_equal(frames, tokens[0, TEXT:, :K])  # the trained codes, then the EOS frame
    curve = read_curve(out / "loss.csv")
    assert [r["step"] for r in curve] == list(range(1, 51))
    assert "val_loss" in curve[24] and "val_loss" in curve[49] and "val_loss" not in curve[0]
    if importlib.util.find_spec("matplotlib"):
        assert (out / "loss.png").stat().st_size > 1000


def test_saved_adapter_reloads_and_merges_to_the_same_logits(memorized):
    cfg, w, tokens, mask, trained, _, out = memorized
    codes = tokens[:, TEXT, : cfg.audio_num_codebooks]
    prompt = tokens[:, :TEXT], mask[:, :TEXT]
    ref = MlxBackend(cfg, model=trained).teacher_forced_logits(*prompt, codes)

    fresh = _model(cfg, w)
    attach_adapter(fresh, load_adapter(out / "adapter", cfg))
    got = MlxBackend(cfg, model=fresh).teacher_forced_logits(*prompt, codes)
    for a, b in zip(got, ref):
        np.testing.assert_array_equal(a, b)

    merged = MlxBackend(cfg, merge_adapter_weights(w, load_adapter(out / "adapter", cfg)))
    for a, b in zip(merged.teacher_forced_logits(*prompt, codes), ref):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    merge_lora(fresh)  # in-memory merge: same result, no LoRA layers left
    assert not lora_layers(fresh)
    for a, b in zip(MlxBackend(cfg, model=fresh).teacher_forced_logits(*prompt, codes), ref):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


def test_merged_weights_on_the_cpu_backend(memorized):
    cpu = pytest.importorskip("csm_cpu.backend")
    cfg, w, tokens, mask, trained, _, out = memorized
    codes = tokens[:, TEXT, : cfg.audio_num_codebooks]
    prompt = tokens[:, :TEXT], mask[:, :TEXT]
    ref = MlxBackend(cfg, model=trained).teacher_forced_logits(*prompt, codes)
    merged = merge_adapter_weights(w, load_adapter(out / "adapter", cfg))
    got = cpu.CpuBackend(cfg, merged, "f32", threads=1).teacher_forced_logits(*prompt, codes)
    for a, b in zip(got, ref):
        print(f"CPU merged vs MLX base+adapter: max |d| {np.abs(a - b).max():.2e} (scale {np.abs(b).max():.1f})")
        np.testing.assert_allclose(a, b, atol=1e-5 * max(1.0, np.abs(b).max()), rtol=0)


def test_adapter_for_another_model_shape_is_refused(memorized):
    from csm_core.config import CSMConfig

    _, _, _, _, _, _, out = memorized
    other = CSMConfig(backbone_flavor="tiny-backbone", decoder_flavor="tiny-backbone", text_vocab_size=128_256)
    with pytest.raises(AdapterError, match="another model shape: audio_head is \\[31, 32, 2051\\]"):
        load_adapter(out / "adapter", other)
    with pytest.raises(AdapterError, match="not an adapter directory"):
        load_adapter(out, other)


def test_interrupted_run_resumes_to_the_same_curve(base, tmp_path):
    cfg, w = base
    tokens, mask = tiny_batch(cfg, 8)
    train = [Example(tokens[i][mask[i].any(-1)], mask[i][mask[i].any(-1)], str(i)) for i in range(2)]
    tc = TrainConfig(steps=6, batch_size=1, grad_accum=2, lr=3e-3, warmup=2, save_every=3, eval_every=2, seed=4,
                     lora=LoraConfig(rank=4, dropout=0.2))
    whole = Trainer(_model(cfg, w), train, train[:1], tc, tmp_path / "a", log=lambda s: None).run()

    class Stop(Exception):
        pass

    t = Trainer(_model(cfg, w), train, train[:1], tc, tmp_path / "b", log=lambda s: None)
    step = t.train_step
    t.train_step = lambda s: (_ for _ in ()).throw(Stop()) if s == 4 else step(s)  # dies in step 5, after the step-3 checkpoint
    with pytest.raises(Stop):
        t.run()
    resumed = Trainer(_model(cfg, w), train, train[:1], tc, tmp_path / "b", log=lambda s: None).run(resume=True)
    keys = ("loss", "backbone_loss", "decoder_loss", "grad_norm", "lr", "val_loss")
    assert [{k: r.get(k) for k in keys} for r in resumed] == [{k: r.get(k) for k in keys} for r in whole]
    assert [{k: r.get(k) for k in keys} for r in read_curve(tmp_path / "b" / "loss.csv")] == \
        [{k: r.get(k) for k in keys} for r in read_curve(tmp_path / "a" / "loss.csv")]
    a, b = load_adapter(tmp_path / "a" / "adapter"), load_adapter(tmp_path / "b" / "adapter")
    for k in a.arrays:
        np.testing.assert_array_equal(np.array(a.arrays[k]), np.array(b.arrays[k]))
    with pytest.raises(FileExistsError, match="resume"):
        Trainer(_model(cfg, w), train, [], tc, tmp_path / "b", log=lambda s: None).run()


def test_full_fine_tune_in_bf16_keeps_float32_state_and_writes_loadable_weights(base, tmp_path):
    from mlx.utils import tree_flatten

    from csm_core.weights import load_csm_checkpoint

    cfg, w = base
    tokens, mask = tiny_batch(cfg, 9)
    train = [Example(tokens[i][mask[i].any(-1)], mask[i][mask[i].any(-1)], str(i)) for i in range(2)]
    model = CSMModel(cfg).load_canonical(w, "bfloat16")
    tc = TrainConfig(steps=3, lr=1e-3, max_grad_norm=0.5, save_every=3)
    trainer = Trainer(model, train, [], tc, tmp_path, log=lambda s: None)
    rows = trainer.run()
    params = dict(tree_flatten(model.parameters()))
    assert set(trainer.opt.master) == set(params)  # full fine-tune: every tensor trains
    for k, p in params.items():
        assert p.dtype == mx.bfloat16 and trainer.opt.master[k].dtype == mx.float32 and trainer.opt.v[k].dtype == mx.float32
        assert mx.array_equal(p, trainer.opt.master[k].astype(mx.bfloat16))
    assert rows[0]["grad_norm"] > 0.5 and all(np.isfinite(r["loss"]) for r in rows)
    moved = np.abs(np.array(params["backbone.layers.0.attn.q_proj.weight"].astype(mx.float32))
                   - w["backbone.layers.0.attn.q_proj.weight"]).max()
    assert moved > 1e-3  # three steps of lr 1e-3 moved the weights beyond bf16 rounding
    loaded_cfg, loaded = load_csm_checkpoint(tmp_path / "model")
    assert loaded_cfg == cfg and set(loaded) == set(w)
