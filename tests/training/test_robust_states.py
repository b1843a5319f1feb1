"""Robust training in token-state space (robust.space: states): reference forward, alignment, terms."""

from __future__ import annotations

import math

import pytest
import torch

from saferclip_diffusers.attacks.soft_tokens import soft_tokens, with_soft_rows
from saferclip_diffusers.training.models import load_towers
from saferclip_diffusers.training.robust import RobustSettings, inner_attack, prefixed_ids
from saferclip_diffusers.training.robust_states import (
    StatesSpace,
    full_ids,
    pool_weight,
    reference_text,
    states_layer,
)
from saferclip_diffusers.training.trainer import Trainer

STATES = ["robust.warmup=0", "robust.every=1", "robust.steps=3", "robust.tokens=2", "robust.space=states"]


@pytest.fixture
def states_trainer(small_config, tmp_path):
    trainer = Trainer(
        small_config("run.cache_dir=" + str(tmp_path / "c"), *STATES, base="tiny-robust"), tmp_path / "r"
    )
    yield trainer.setup()
    trainer.close()


def _space(tr, texts, targets):
    b = tr.bundles[0]
    model = tr.accelerator.unwrap_model(tr.model).text[b.slot]
    return b, model, StatesSpace(tr, b, model, texts, targets)


def _perturb_lora(model):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.add_(0.5 * torch.randn_like(p))


def test_reference_is_the_original_encoder_not_the_live_one(states_trainer, tiny_sd_dir):
    tr = states_trainer
    texts = [tr.data.unsafe_texts[i] for i in tr.split.train_unsafe[:3]]
    b, model, space = _space(tr, texts, texts)
    fresh = load_towers(b.settings, need_vision=False).text.eval()  # an independent copy of the original
    ids = full_ids(b.towers.tokenizer, texts)
    with torch.no_grad():
        out = fresh(ids)
    assert torch.allclose(space.unsafe[0], out.last_hidden_state, atol=1e-5)  # tiny SD reads the final states
    # the pooled vector swap-gcg sees: the tiny SD pipeline's own CLIPTextModel (same tower, no projection)
    from transformers import CLIPTextModel

    pipe_encoder = CLIPTextModel.from_pretrained(tiny_sd_dir, subfolder="text_encoder").eval()
    with torch.no_grad():
        pipe_out = pipe_encoder(ids)
    assert torch.allclose(space.unsafe[1], pipe_out.pooler_output, atol=1e-5)
    assert torch.allclose(space.unsafe[0], pipe_out.last_hidden_state, atol=1e-5)
    _perturb_lora(model)
    assert torch.allclose(space.reference(texts)[0], out.last_hidden_state, atol=1e-5)  # adapters disabled
    with torch.no_grad():
        assert not torch.allclose(space.live(ids.to(tr.device))[0], out.last_hidden_state, atol=1e-3)
    assert model.training  # the reference forward restores the mode


def test_redirect_part_is_zero_on_the_original_weights_when_the_target_is_the_caption(states_trainer):
    tr = states_trainer
    texts = [tr.data.unsafe_texts[i] for i in tr.split.train_unsafe[:4]]
    b, model, space = _space(tr, texts, texts)  # t̂ = t*
    model.eval()
    ids = full_ids(b.towers.tokenizer, texts)
    with torch.no_grad(), soft_tokens(model, model.get_input_embeddings().weight[ids]):
        space.s.w_redir, space.s.w_rel = 1.0, 0.0
        assert float(space.outer(ids)) == pytest.approx(0.0, abs=1e-5)  # LoRA B = 0: live == original
        space.s.w_redir, space.s.w_rel = 0.0, 1.0
        assert float(space.outer(ids)) == pytest.approx(math.log(2), abs=1e-5)  # softplus(0)
    other = [tr.data.safe_texts[i] for i in range(4)]
    _, _, away = _space(tr, texts, other)
    away.s.w_redir, away.s.w_rel = 1.0, 0.0
    with torch.no_grad():
        assert float(away.outer(ids)) > 0.01


def test_prefixed_inputs_line_up_with_swap_gcg_prefix_mode(states_trainer):
    tr = states_trainer
    tok = tr.bundles[0].towers.tokenizer
    texts = ["a naked woman", "blood on the street at night", "x"]  # short: nothing is truncated
    ids, pos = prefixed_ids(tok, texts, 2, full=True)
    plain = full_ids(tok, texts)
    assert ids.shape == plain.shape == (3, 77) and pos == [1, 2]
    # [BOS, a1, a2, caption..]: the caption is shifted by k against its target, position i meets position i
    assert torch.equal(ids[:, 0], plain[:, 0]) and torch.equal(ids[:, 3:], plain[:, 1:-2])


def test_states_inner_attack_lowers_the_states_distance(states_trainer):
    tr = states_trainer
    texts = [tr.data.unsafe_texts[i] for i in tr.split.train_unsafe[:4]]
    b, model, space = _space(tr, texts, texts)
    _perturb_lora(model)  # a "trained" encoder, so that the attack has something to undo
    space = StatesSpace(tr, b, model, texts, texts)
    ids, pos = prefixed_ids(b.towers.tokenizer, texts, 2, full=True)
    s = RobustSettings(tokens=2, steps=6, step_size=0.05, radius=0.5, space="states")
    adv, first, last = inner_attack(model, ids, pos, space.objective(), s, torch.Generator().manual_seed(0))
    assert last < first
    with torch.no_grad(), soft_tokens(model, with_soft_rows(model, ids, pos, adv)):
        model.eval()
        direct = space.distance(space.live(ids), space.unsafe).mean()
    assert float(direct) == pytest.approx(last, rel=1e-4)


def test_full_finetune_reference_is_loaded_once_and_stays_original(small_config, tmp_path):
    cfg = small_config("run.cache_dir=" + str(tmp_path / "c"), "finetune=full", *STATES, base="tiny-robust")
    with Trainer(cfg, tmp_path / "r") as tr:
        tr.setup()
        b = tr.bundles[0]
        live = tr.accelerator.unwrap_model(tr.model).text[b.slot]
        with reference_text(tr, b) as first:
            assert first is not live and not any(p.requires_grad for p in first.parameters())
        with torch.no_grad():
            for p in live.parameters():
                p.add_(0.1)
        with reference_text(tr, b) as again:
            assert again is first
            w = again.get_input_embeddings().weight
            assert not torch.allclose(w, live.get_input_embeddings().weight)


def test_layer_and_pool_weights_follow_the_pipeline():
    assert states_layer("auto", ["text_encoder"]) == "final"
    assert states_layer("auto", ["text_encoder", "text_encoder_2"]) == "penultimate"
    assert states_layer("final", ["text_encoder", "text_encoder_2"]) == "final"
    assert pool_weight("text_encoder", ["text_encoder"]) == 0.5
    assert [
        pool_weight(s, ["text_encoder", "text_encoder_2"]) for s in ("text_encoder", "text_encoder_2")
    ] == [
        0.0,
        1.0,
    ]
