"""What trains, and the frozen reference: LoRA / full fine-tuning, gradients, reference never drifts."""

import torch
from transformers import CLIPTextModelWithProjection

from saferclip_diffusers.tiny import tiny_model_dir
from saferclip_diffusers.training.models import encode_text, reference_towers
from saferclip_diffusers.training.trainer import Trainer


def _original_text(texts, bundle):
    model = CLIPTextModelWithProjection.from_pretrained(tiny_model_dir("clip")).eval()
    with torch.no_grad():
        return encode_text(model, bundle.tokenize(texts), bundle.eos_token_id, bundle.settings.hidden_layer)


def _steps(trainer, n):
    """Run ``n`` optimizer steps on the first micro-batches of epoch 1, as the training loop does."""
    plan = trainer.epoch_plan(1)
    for i in range(n):
        u, k = plan[i % len(plan)]
        loss, _ = trainer.batch_loss(u, k)
        trainer.accelerator.backward(loss)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)


def test_lora_gradients_reach_only_adapters_and_reference_stays_original(small_config, tmp_path):
    trainer = Trainer(small_config("lora.dropout=0"), tmp_path / "run").setup()
    model = trainer.accelerator.unwrap_model(trainer.model)
    params = dict(model.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    base_before = {n: p.detach().clone() for n, p in params.items() if not p.requires_grad}

    _steps(trainer, 3)
    u, k = trainer.epoch_plan(1)[0]
    loss, _ = trainer.batch_loss(u, k)
    loss.backward()
    for n, p in params.items():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, n
    assert all(torch.equal(base_before[n], params[n]) for n in base_before)  # base weights untouched

    bundle = trainer.bundles[0]
    texts = [trainer.data.safe_texts[i] for i in range(6)]
    original, original_hidden = _original_text(texts, bundle)
    bundle.text.train()
    with reference_towers(bundle, trainer.cfg) as (text0, _):
        assert not text0.training  # the reference runs in eval mode (no dropout) ...
        ref, ref_hidden = encode_text(
            text0, bundle.tokenize(texts), bundle.eos_token_id, bundle.settings.hidden_layer
        )
    assert bundle.text.training  # ... and the live model gets back the train mode it had
    assert torch.allclose(ref, original, atol=1e-5) and torch.allclose(ref_hidden, original_hidden, atol=1e-5)
    cached = trainer.frozen[bundle.slot]
    assert torch.allclose(cached.text_safe[:6], original, atol=1e-5)
    assert torch.allclose(cached.hidden_safe[:6], original_hidden, atol=1e-5)
    bundle.text.eval()
    with torch.no_grad():
        live, _ = encode_text(bundle.text, bundle.tokenize(texts), bundle.eos_token_id, None)
    assert (
        live - original
    ).abs().max() > 1e-4  # the live model did move: the reference is not the live model


def test_full_finetuning_reference_is_a_separate_copy(small_config, tmp_path, trainable_state):
    trainer = Trainer(small_config("finetune=full"), tmp_path / "run").setup()
    model = trainer.accelerator.unwrap_model(trainer.model)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("encoder.layers.0.self_attn.q_proj" in n for n in trainable)
    before = trainable_state(trainer)
    _steps(trainer, 2)
    after = trainable_state(trainer)
    assert any(not torch.equal(before[n], after[n]) for n in before)
    bundle = trainer.bundles[0]
    texts = trainer.data.unsafe_texts[:4]
    original, _ = _original_text(texts, bundle)
    with reference_towers(bundle, trainer.cfg) as (text0, _):
        assert text0 is not bundle.text
        ref, _ = encode_text(text0, bundle.tokenize(texts), bundle.eos_token_id, None)
    assert torch.allclose(ref, original, atol=1e-5)
    assert torch.allclose(trainer.frozen[bundle.slot].text_unsafe[:4], original, atol=1e-5)


def test_dynamic_padding_matches_pipeline_padding(small_config, tmp_path):
    """Training pads to the batch's longest caption; the pipelines pad to 77. Pooled outputs must agree."""
    from transformers import CLIPTokenizer

    trainer = Trainer(small_config(), tmp_path / "run").setup()
    bundle = trainer.bundles[0]
    texts = ["a cat", "a much longer caption about a dog that runs across a green field near a red barn"]
    tok = CLIPTokenizer.from_pretrained(tiny_model_dir("sd"), subfolder="tokenizer")
    full = tok(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    short = bundle.tokenize(texts)
    assert short.shape[1] < 77
    model = CLIPTextModelWithProjection.from_pretrained(tiny_model_dir("clip")).eval()
    with torch.no_grad():
        for layer in ("last", -2):
            e_full, h_full = encode_text(model, full, bundle.eos_token_id, layer)
            e_short, h_short = encode_text(model, short, bundle.eos_token_id, layer)
            assert torch.allclose(e_full, e_short, atol=1e-5) and torch.allclose(h_full, h_short, atol=1e-5)


def test_frozen_embeddings_are_computed_once_and_reloaded(small_config, tmp_path, monkeypatch):
    from saferclip_diffusers.training import reference

    calls = []
    original = reference.compute_frozen
    monkeypatch.setattr(reference, "compute_frozen", lambda *a, **k: calls.append(1) or original(*a, **k))
    first = Trainer(small_config(), tmp_path / "run").setup()
    assert len(calls) == 1 and list((tmp_path / "run" / "cache").glob("frozen-text_encoder-*.safetensors"))
    first.train()  # training steps read the cache, never the reference model
    assert len(calls) == 1
    first.close()  # releases the folder lock
    second = Trainer(small_config(), tmp_path / "run", resume="latest").setup()
    assert len(calls) == 1  # a restarted run reloads the cache from disk
    assert torch.equal(second.frozen["text_encoder"].text_safe, first.frozen["text_encoder"].text_safe)


def test_initial_weights_do_not_depend_on_random_numbers_used_while_loading(
    small_config, tmp_path, monkeypatch, trainable_state
):
    """Building a tiny model on first use consumed the global generator after seeding, so a run with an empty
    model cache started from other LoRA weights than one with the cache built (issue 14)."""
    from saferclip_diffusers.training import models

    with Trainer(small_config(), tmp_path / "a") as plain:
        before = trainable_state(plain.setup())
    real = models.load_towers
    monkeypatch.setattr(models, "load_towers", lambda *a, **k: (torch.rand(1000), real(*a, **k))[1])
    with Trainer(small_config(), tmp_path / "b") as consuming:
        after = trainable_state(consuming.setup())
    assert before.keys() == after.keys() and any(n.endswith("lora_A.default.weight") for n in before)
    for name in before:
        assert torch.equal(before[name], after[name]), name
