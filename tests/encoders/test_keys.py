"""Key layouts (nested, flat, prefixed, OpenCLIP) and the load that refuses to leave weights behind."""

from __future__ import annotations

import pytest
import torch
from transformers import CLIPTextModel, CLIPTextModelWithProjection

from saferclip_diffusers.encoders import IncompatibleEncoderError, canonical_clip_state_dict, load_exact
from saferclip_diffusers.encoders.keys import to_module_layout
from saferclip_diffusers.encoders.openclip import hf_to_openclip, openclip_to_hf

from .conftest import tiny_text_config


def _nested(model):
    return {("" if k.startswith("text_") else "text_model.") + k: v for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def flat_model():
    torch.manual_seed(0)
    return CLIPTextModel(tiny_text_config()).eval()


def test_every_layout_maps_to_the_same_nested_dict(flat_model):
    flat = flat_model.state_dict()
    assert not any(k.startswith("text_model.") for k in flat)  # transformers >= 5.6: flat keys
    nested = {"text_model." + k: v for k, v in flat.items()}
    prefixed = {"cond_stage_model.transformer." + k: v for k, v in nested.items()}
    with_vision = {
        **nested,
        "vision_model.embeddings.class_embedding": torch.zeros(3),
        "logit_scale": torch.ones(()),
    }
    expected = {k: v for k, v in nested.items() if not k.endswith("position_ids")}
    for layout in (flat, nested, prefixed, with_vision):
        got = canonical_clip_state_dict(layout, source="test")
        assert set(got) == set(expected)
        for key, value in expected.items():
            assert torch.equal(got[key], value)


def test_module_layout_follows_the_target(flat_model):
    nested = canonical_clip_state_dict(flat_model.state_dict(), source="t")
    assert set(to_module_layout(nested, flat_model)) == {
        k for k in flat_model.state_dict() if "position_ids" not in k
    }
    projected = CLIPTextModelWithProjection(tiny_text_config())
    assert set(to_module_layout(nested, projected)) | {"text_projection.weight"} == {
        k for k in projected.state_dict() if "position_ids" not in k
    }


def test_stray_and_ambiguous_keys_are_refused(flat_model):
    nested = {"text_model." + k: v for k, v in flat_model.state_dict().items()}
    with pytest.raises(IncompatibleEncoderError, match="belong to no CLIP text encoder: unet.conv.weight"):
        canonical_clip_state_dict({**nested, "unet.conv.weight": torch.zeros(1)}, source="x")
    two = {**{"a." + k: v for k, v in nested.items()}, **{"b." + k: v for k, v in nested.items()}}
    with pytest.raises(IncompatibleEncoderError, match=r"several CLIP text encoders.*\['a\.', 'b\.'\]"):
        canonical_clip_state_dict(two, source="x")
    picked = canonical_clip_state_dict(two, source="x", prefix="b.")
    assert torch.equal(
        picked["text_model.final_layer_norm.weight"], nested["text_model.final_layer_norm.weight"]
    )
    with pytest.raises(IncompatibleEncoderError, match="no CLIP text encoder"):
        canonical_clip_state_dict({"shared.weight": torch.zeros(2, 2)}, source="x")


def test_silent_no_op_load_raises(flat_model):
    """strict=False with the wrong layout loads nothing and says nothing; load_exact must not."""
    target = CLIPTextModelWithProjection(tiny_text_config())
    flat = dict(flat_model.state_dict())  # flat keys into a nested module: torch would match none of them
    result = target.load_state_dict(flat, strict=False)
    assert not set(flat) & set(target.state_dict())  # the silent trap: nothing matched, nothing raised
    assert result.unexpected_keys
    with pytest.raises(IncompatibleEncoderError, match="missing from it") as err:
        load_exact(target, flat, source="flat.pt")
    assert "flat.pt" in str(err.value) and "match nothing" in str(err.value)


def test_missing_and_misshapen_weights_are_named(flat_model):
    sd = dict(flat_model.state_dict())
    del sd["encoder.layers.1.mlp.fc2.bias"]
    fresh = CLIPTextModel(tiny_text_config())
    with pytest.raises(IncompatibleEncoderError, match=r"encoder\.layers\.1\.mlp\.fc2\.bias"):
        load_exact(fresh, sd, source="s")
    wide = CLIPTextModel(tiny_text_config(width=48)).state_dict()
    with pytest.raises(IncompatibleEncoderError, match="shapes differ"):
        load_exact(fresh, wide, source="s")


def test_openclip_round_trip_is_bit_exact_and_follows_the_spec():
    torch.manual_seed(1)
    model = CLIPTextModelWithProjection(tiny_text_config(width=48, heads=4, projection=40, act="gelu"))
    nested = {k: v for k, v in model.state_dict().items() if "position_ids" not in k}
    oc = hf_to_openclip(nested, prefix="model.")
    # independent transcription of spec section 4.7
    attn = model.text_model.encoder.layers[1].self_attn
    expected_in_proj = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight], dim=0)
    assert torch.equal(oc["model.transformer.resblocks.1.attn.in_proj_weight"], expected_in_proj)
    assert torch.equal(oc["model.text_projection"], model.text_projection.weight.t())
    assert torch.equal(
        oc["model.positional_embedding"], model.text_model.embeddings.position_embedding.weight
    )
    assert torch.equal(
        oc["model.transformer.resblocks.0.mlp.c_fc.weight"], model.text_model.encoder.layers[0].mlp.fc1.weight
    )
    back = openclip_to_hf(oc)
    assert set(back) == set(nested)
    assert all(torch.equal(back[k], nested[k]) for k in nested)
    # and an OpenCLIP-layout dict loads through the canonical path
    assert set(canonical_clip_state_dict(oc, source="oc")) == set(nested)
