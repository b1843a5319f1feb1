"""The soft-token hook reproduces the plain forward bit for bit, and gradients reach the soft rows."""

from __future__ import annotations

import copy

import pytest
import torch

from saferclip_diffusers.attacks.soft_tokens import embedding_matrix, soft_tokens, with_soft_rows

PROMPTS = ["a naked woman on the beach", "a photo of a cat"]


def _ids(tokenizer):
    return tokenizer(PROMPTS, padding="max_length", max_length=77, return_tensors="pt").input_ids


def _assert_same_forward(encoder, ids):
    with torch.no_grad():
        plain = encoder(ids, output_hidden_states=True)
        with soft_tokens(encoder, embedding_matrix(encoder)[ids]):
            soft = encoder(ids, output_hidden_states=True)
    for name in ("last_hidden_state", "text_embeds", "pooler_output"):
        if name in plain:
            assert torch.equal(plain[name], soft[name]), name
    for a, b in zip(plain.hidden_states, soft.hidden_states, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("slot", ["text_encoder", "text_encoder_2"])
def test_soft_forward_is_bit_identical_sdxl(sdxl_pipe, slot):
    tok = sdxl_pipe.tokenizer if slot == "text_encoder" else sdxl_pipe.tokenizer_2
    for encoder in (getattr(sdxl_pipe, slot), sdxl_pipe.original_encoder(slot)):
        _assert_same_forward(encoder, _ids(tok))


def test_soft_forward_is_bit_identical_sd(sd_pipe):
    _assert_same_forward(sd_pipe.text_encoder, _ids(sd_pipe.tokenizer))


@pytest.mark.parametrize("slot", ["text_encoder", "text_encoder_2"])
def test_soft_forward_is_bit_identical_with_lora(sdxl_pipe, slot):
    from peft import LoraConfig, get_peft_model

    encoder = copy.deepcopy(getattr(sdxl_pipe, slot))
    model = get_peft_model(
        encoder,
        LoraConfig(r=4, lora_alpha=4, target_modules=["k_proj", "v_proj", "fc1"], init_lora_weights=False),
    )
    model.eval()
    tok = sdxl_pipe.tokenizer if slot == "text_encoder" else sdxl_pipe.tokenizer_2
    ids = _ids(tok)
    _assert_same_forward(model, ids)
    with torch.no_grad():  # the adapters are really active (the comparison is not against the base model)
        base = model.get_base_model()
        with model.disable_adapter():
            plain_base = base(ids).last_hidden_state
        assert not torch.equal(model(ids).last_hidden_state, plain_base)


def test_hook_is_removed_and_shape_checked(sd_pipe):
    encoder, ids = sd_pipe.text_encoder, _ids(sd_pipe.tokenizer)
    with torch.no_grad():
        before = encoder(ids).last_hidden_state
        with soft_tokens(encoder, torch.zeros(2, 77, embedding_matrix(encoder).shape[1])):
            changed = encoder(ids).last_hidden_state
        after = encoder(ids).last_hidden_state
    assert not torch.equal(before, changed)
    assert torch.equal(before, after)
    with pytest.raises(ValueError, match="must match"), soft_tokens(encoder, torch.zeros(1, 5, 3)):
        encoder(ids)


def test_soft_rows_carry_gradient_to_their_positions_only(sd_pipe):
    encoder, ids = sd_pipe.text_encoder, _ids(sd_pipe.tokenizer)[:1]
    width = embedding_matrix(encoder).shape[1]
    rows = torch.randn(1, 2, width, requires_grad=True)
    embeds = with_soft_rows(encoder, ids, [3, 5], rows)
    assert torch.equal(embeds[0, 3], rows[0, 0].detach()) and torch.equal(embeds[0, 5], rows[0, 1].detach())
    assert torch.equal(embeds[0, 4], embedding_matrix(encoder)[ids[0, 4]].detach())
    with soft_tokens(encoder, embeds):
        out = encoder(ids).last_hidden_state
    # causal attention: state 4 depends on soft row 0 (position 3) but not on row 1 (position 5)
    probe = torch.randn(
        out.shape[-1], generator=torch.Generator().manual_seed(0)
    )  # LayerNorm output sums are constant
    (grad,) = torch.autograd.grad((out[0, 4] * probe).sum(), rows)
    assert grad[0, 0].abs().sum() > 0 and grad[0, 1].abs().sum() == 0
