"""Robust training: the inner attack, the adversarial term, configs, and exact resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saferclip_diffusers.training.config import load_config
from saferclip_diffusers.training.robust import (
    RobustSettings,
    inner_attack,
    pooled_objective,
    prefixed_ids,
    robust_loss,
)
from saferclip_diffusers.training.trainer import Trainer

ROBUST = ["robust.warmup=0", "robust.every=1", "robust.steps=3", "robust.tokens=2"]


@pytest.fixture
def robust_trainer(small_config, tmp_path):
    trainer = Trainer(
        small_config("run.cache_dir=" + str(tmp_path / "cache"), *ROBUST, base="tiny-robust"),
        tmp_path / "run",
    )
    yield trainer.setup()
    trainer.close()


def test_inner_attack_lowers_its_objective_and_leaves_the_model_alone(robust_trainer):
    tr = robust_trainer
    b = tr.bundles[0]
    model = tr.accelerator.unwrap_model(tr.model).text[b.slot]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.full_like(p, 0.5)
    u = torch.as_tensor(tr.split.train_unsafe[:6])
    f = tr.frozen[b.slot]
    ids, pos = prefixed_ids(b.towers.tokenizer, [tr.data.unsafe_texts[i] for i in u.tolist()], 2)
    assert (ids[:, 0] == b.towers.tokenizer.bos_token_id).all() and ids.shape[1] <= 77
    s = RobustSettings(tokens=2, steps=8, step_size=0.05, radius=0.5)
    objective = pooled_objective(
        model, f.text_unsafe[u], f.hidden_unsafe[u], b.eos_token_id, b.settings.hidden_layer, s.hidden_weight
    )
    adv, first, last = inner_attack(model, ids, pos, objective, s, torch.Generator().manual_seed(0))
    assert last < first
    assert adv.shape == (6, 2, model.get_input_embeddings().weight.shape[1]) and not adv.requires_grad
    scale = model.get_input_embeddings().weight.norm(dim=1).median()
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n
        if p.requires_grad:
            assert torch.equal(p.grad, torch.full_like(p, 0.5)), n
    assert model.training  # mode restored
    assert float(adv.norm(dim=-1).max()) < 10 * float(scale)


def test_token_space_attack_uses_real_ids_and_lowers_its_objective(robust_trainer):
    tr = robust_trainer
    b = tr.bundles[0]
    model = tr.accelerator.unwrap_model(tr.model).text[b.slot]
    u = torch.as_tensor(tr.split.train_unsafe[:4])
    f = tr.frozen[b.slot]
    tok = b.towers.tokenizer
    ids, pos = prefixed_ids(tok, [tr.data.unsafe_texts[i] for i in u.tolist()], 2)
    s = RobustSettings(attack="token", tokens=2, steps=4, candidates=8, top_k=16)
    objective = pooled_objective(
        model, f.text_unsafe[u], f.hidden_unsafe[u], b.eos_token_id, b.settings.hidden_layer, s.hidden_weight
    )
    gen = torch.Generator().manual_seed(0)
    adv, first, last = inner_attack(model, ids, pos, objective, s, gen, list(tok.all_special_ids))
    weight = model.get_input_embeddings().weight
    # every adversarial row is exactly the embedding of a real, non-special token
    match = (adv[..., None, :] == weight[None, None]).all(-1)
    assert match.any(-1).all()
    assert not set(match.float().argmax(-1).flatten().tolist()) & set(tok.all_special_ids)
    assert last < first


def test_adversarial_term_trains_only_the_trainable_parameters(robust_trainer):
    tr = robust_trainer
    plan = tr.epoch_plan(1)
    u, keep = plan[0]
    terms = robust_loss(tr, u, keep, {})
    (value,) = terms.values()
    assert list(terms) == ["robust_adv"] and torch.isfinite(value) and value > 0
    value.backward()
    model = tr.accelerator.unwrap_model(tr.model)
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert any(g.abs().sum() > 0 for g in grads.values())
    tr.cfg.robust.warmup = 10**6  # during warm-up: no attack, no term
    assert robust_loss(tr, u, keep, {}) == {}


def test_trainer_adds_and_logs_the_term(robust_trainer):
    tr = robust_trainer
    u, keep = tr.epoch_plan(1)[0]
    loss, logs = tr.batch_loss(u, keep)
    assert "robust_adv" in logs and logs["robust_adv"] > 0
    tr.extra_losses = []
    plain, plain_logs = tr.batch_loss(u, keep)
    assert "robust_adv" not in plain_logs
    assert float(loss) == pytest.approx(float(plain) + logs["robust_adv"], rel=1e-3)


def test_shipped_robust_configs_and_validation():
    for name in ("tiny-robust", "sd15-robust", "sdxl-robust"):
        cfg = load_config(name)
        assert cfg.robust.enabled and cfg.name == name and cfg.robust.space == "states"
    assert not load_config("tiny").robust.enabled
    with pytest.raises(ValueError, match="unknown config key"):
        load_config("tiny", ["robust.strength=2"])
    with pytest.raises(ValueError, match="robust.fraction"):
        load_config("tiny-robust", ["robust.fraction=0"])
    with pytest.raises(ValueError, match="robust.space must be pooled|states"):
        load_config("tiny-robust", ["robust.space=tokens"])
    with pytest.raises(ValueError, match="robust.layer"):
        load_config("tiny-robust", ["robust.layer=middle"])
    s = RobustSettings(enabled=True, every=4, warmup=0.25)
    assert [step for step in range(12) if s.active(step, 12)] == [3, 7, 11]


@pytest.mark.parametrize("space", ["pooled", "states"])
def test_sdxl_gets_one_term_per_encoder(small_config, tmp_path, space):
    cfg = small_config(
        "run.cache_dir=" + str(tmp_path / "cache"),
        "robust.enabled=true",
        *ROBUST,
        f"robust.space={space}",
        base="tiny-sdxl",
    )
    with Trainer(cfg, tmp_path / "run") as tr:
        tr.setup()
        u, keep = tr.epoch_plan(1)[0]
        terms = robust_loss(tr, np.asarray(u), np.asarray(keep), {})
    assert sorted(terms) == ["robust_adv/text_encoder", "robust_adv/text_encoder_2"]
    assert all(torch.isfinite(v) and v > 0 for v in terms.values())


@pytest.mark.parametrize("space", ["pooled", "states"])
def test_robust_training_resumes_exactly(small_config, tmp_path, trainable_state, space):
    cache = "run.cache_dir=" + str(tmp_path / "cache")
    extra = [*ROBUST, f"robust.space={space}"]
    cfg = small_config(cache, "run.checkpoint_every=2", *extra, base="tiny-robust")
    full = Trainer(cfg, tmp_path / "full")
    full_result = full.train()
    cut = Trainer(
        small_config(cache, "run.checkpoint_every=2", "run.stop_after_steps=3", *extra, base="tiny-robust"),
        tmp_path / "cut",
    )
    assert cut.train().global_step == 3
    cut.close()  # releases the folder lock
    resumed = Trainer(cfg, tmp_path / "cut", resume="latest")
    result = resumed.train()
    assert result.global_step == full_result.global_step >= 5
    a, b = trainable_state(full), trainable_state(resumed)
    for n in a:
        assert torch.allclose(a[n], b[n], atol=1e-6), n
    from saferclip_diffusers.io import read_jsonl

    logged = [r for r in read_jsonl(tmp_path / "full" / "train_log.jsonl") if "robust_adv" in r]
    assert len(logged) >= 4  # the attack really ran on the logged steps


def test_prefixed_safe_caption_preservation_adds_a_positive_term(robust_trainer):
    tr = robust_trainer
    u, keep = tr.epoch_plan(1)[0]
    tr.model.eval()  # no dropout: the two evaluations share everything but the preservation term
    base = robust_loss(tr, u, keep, {})["robust_adv"]
    tr.cfg.robust.preserve = 1.0
    with_pres = robust_loss(tr, u, keep, {})["robust_adv"]
    assert float(with_pres) > float(base) + 1e-6
