"""Peers' released encoders as safe encoders: DES/SAGE .pt, AdvUnlearn .bin folders, Safe-CLIP CLIPModel, SD 2.x.

Each test writes a tiny fake checkpoint in the peer's own layout (torch.save of a state dict with the peer's key
names) and checks that the loaded encoder reproduces the source encoder's outputs exactly.
"""

from __future__ import annotations

import pytest
import torch
from transformers import CLIPConfig, CLIPModel, CLIPTextModel, CLIPTextModelWithProjection

from saferclip_diffusers.encoders import (
    IncompatibleEncoderError,
    PickleCheckpointError,
    SlotExpectation,
    check_encoder,
    load_safe_text_encoder,
)

from .conftest import tiny_text_config


def _nested(model) -> dict:
    """transformers 4.x key names (what DES, SAGE and AdvUnlearn saved): text_model.* for the tower."""
    return {
        k if k.startswith(("text_model.", "text_projection")) else "text_model." + k: v
        for k, v in model.state_dict().items()
    }


def _des_file(path, model, **extra):
    torch.save(
        {
            "model_state_dict": _nested(model),
            "epoch": 3,
            "using_text_encoder": 1,
            "is_t5": False,
            "args": {"lr": 1e-5},
            **extra,
        },
        path,
    )
    return path


def _same_outputs(a, b, ids):
    with torch.no_grad():
        out_a, out_b = a(ids, output_hidden_states=True), b(ids, output_hidden_states=True)
    assert torch.equal(out_a.last_hidden_state, out_b.last_hidden_state)
    assert torch.equal(out_a.hidden_states[-2], out_b.hidden_states[-2])
    return out_a, out_b


def test_des_pt_with_known_family_needs_no_config(tmp_path, ids):
    torch.manual_seed(
        0
    )  # a 768-wide tower: CLIP ViT-L/14's family (12 heads, quick_gelu), one layer to stay small
    source = CLIPTextModel(tiny_text_config(width=768, layers=1, heads=12)).eval()
    path = _des_file(tmp_path / "checkpoint-3.pt", source)
    with pytest.raises(PickleCheckpointError) as err:
        load_safe_text_encoder(path)
    assert "allow_pickle=True" in str(err.value) and str(path) in str(err.value)
    loaded = load_safe_text_encoder(path, allow_pickle=True)
    assert isinstance(loaded, CLIPTextModel) and loaded.config.num_attention_heads == 12
    _same_outputs(source, loaded, ids)


def test_des_pt_of_unknown_width_takes_the_base_config(tmp_path, ids):
    torch.manual_seed(1)
    source = CLIPTextModel(tiny_text_config()).eval()
    path = _des_file(tmp_path / "des.pt", source)
    with pytest.raises(IncompatibleEncoderError, match="pass base="):
        load_safe_text_encoder(path, allow_pickle=True)
    base = CLIPTextModel(tiny_text_config()).eval()
    loaded = load_safe_text_encoder(path, allow_pickle=True, base=base)
    _same_outputs(source, loaded, ids)


def test_des_bigg_without_projection_keeps_the_pipelines_projection(tmp_path, ids):
    torch.manual_seed(2)
    cfg = tiny_text_config(width=48, act="gelu", projection=40)
    des_g = CLIPTextModel(cfg).eval()  # DES trains bigG as a plain CLIPTextModel: no text_projection saved
    path = _des_file(tmp_path / "des_clipg.pt", des_g, using_text_encoder=2)
    base = CLIPTextModelWithProjection(cfg).eval()  # the pipeline's own text_encoder_2
    with pytest.raises(IncompatibleEncoderError, match="no text_projection"):
        load_safe_text_encoder(path, "text_encoder_2", allow_pickle=True, base=CLIPTextModel(cfg))
    loaded = load_safe_text_encoder(path, "text_encoder_2", allow_pickle=True, base=base)
    assert isinstance(loaded, CLIPTextModelWithProjection)
    with torch.no_grad():
        pooled = des_g(ids).pooler_output
        expected = pooled @ base.text_projection.weight.T  # the projection is a bias-free Linear
        torch.testing.assert_close(loaded(ids).text_embeds, expected, rtol=0, atol=1e-6)
        assert torch.equal(loaded(ids).last_hidden_state, des_g(ids).last_hidden_state)


def test_advunlearn_pickle_folder(tmp_path, ids):
    torch.manual_seed(3)
    source = CLIPTextModel(tiny_text_config()).eval()
    folder = tmp_path / "AdvUnlearn" / "nudity_unlearned"
    source.config.save_pretrained(folder)
    torch.save(_nested(source), folder / "pytorch_model.bin")
    torch.save({"output_dir": "runs", "learning_rate": 1e-5}, folder / "training_args.bin")  # not weights
    with pytest.raises(PickleCheckpointError) as err:
        load_safe_text_encoder(tmp_path / "AdvUnlearn", subfolder="nudity_unlearned")
    assert str(folder / "pytorch_model.bin") in str(err.value) and "allow_pickle=True" in str(err.value)
    loaded = load_safe_text_encoder(tmp_path / "AdvUnlearn", subfolder="nudity_unlearned", allow_pickle=True)
    _same_outputs(source, loaded, ids)


def test_pickle_needs_weights_only(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save(
        {"model_state_dict": {"x": torch.zeros(1)}, "obj": torch.nn.Linear(1, 1)}, path
    )  # a module object
    with pytest.raises(ValueError, match="weights_only=True"):
        load_safe_text_encoder(path, allow_pickle=True)


def test_safe_clip_full_clipmodel_pickle(tmp_path, ids):
    torch.manual_seed(4)
    text = tiny_text_config().to_dict()
    config = CLIPConfig(
        text_config=text,
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 20,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 8,
            "patch_size": 4,
        },
        projection_dim=24,
    )
    clip = CLIPModel(config).eval()
    config.save_pretrained(tmp_path)
    torch.save(clip.state_dict(), tmp_path / "pytorch_model.bin")
    tower = load_safe_text_encoder(tmp_path, allow_pickle=True)
    with torch.no_grad():
        assert torch.equal(tower(ids).last_hidden_state, clip.text_model(ids).last_hidden_state)
    projected = load_safe_text_encoder(tmp_path, "text_encoder_2", allow_pickle=True)
    assert (
        projected.config.projection_dim == 24
    )  # CLIPModel's top-level projection width, not the text default
    with torch.no_grad():
        expected = clip.text_projection(clip.text_model(ids).pooler_output)
        assert torch.equal(projected(ids).text_embeds, expected)


def test_sd2_tower_trimmed_to_23_of_24_layers(tmp_path, ids):
    """diffusers' SD 2.x encoder is OpenCLIP-H without its last block: keep the first N layers of a deeper tower."""
    torch.manual_seed(5)
    deep = CLIPTextModel(tiny_text_config(layers=3)).eval()  # stands for 24 layers
    path = tmp_path / "safeclip_h.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in _nested(deep).items()}, str(path))
    base = CLIPTextModel(tiny_text_config(layers=2))  # the SD 2.x slot: one block fewer
    with pytest.raises(IncompatibleEncoderError, match="match nothing"):
        load_safe_text_encoder(path, base=base)
    trimmed = load_safe_text_encoder(path, base=base, num_hidden_layers=2)
    with torch.no_grad():
        hidden = deep(ids, output_hidden_states=True).hidden_states[2]  # output of block 2 of 3
        expected = deep.final_layer_norm(hidden)
        assert torch.equal(trimmed(ids).last_hidden_state, expected)
    slot = SlotExpectation("text_encoder", 32, 1000, 999, 77, num_hidden_layers=2)
    check_encoder(trimmed, slot)
    with pytest.raises(IncompatibleEncoderError, match="has 3 layers.*num_hidden_layers=23"):
        check_encoder(deep, slot)


def test_flat_single_file_and_class_check(tmp_path, ids):
    torch.manual_seed(6)
    source = CLIPTextModel(tiny_text_config()).eval()
    from safetensors.torch import save_file

    path = tmp_path / "flat.safetensors"  # transformers >= 5.6 CLIPTextModel.state_dict(): flat keys
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    loaded = load_safe_text_encoder(path, base=CLIPTextModel(tiny_text_config()))
    _same_outputs(source, loaded, ids)
    flux_clip = SlotExpectation("text_encoder", 32, 1000, 999, 77, model_class=CLIPTextModel)
    with pytest.raises(IncompatibleEncoderError, match="needs a CLIPTextModel"):
        check_encoder(CLIPTextModelWithProjection(tiny_text_config()), flux_clip)


def test_des_t5_file_for_sd3_or_flux(tmp_path):
    """DES's T5 (des_t5.pt) goes into SD3's text_encoder_3 / FLUX's text_encoder_2 with model_class=T5EncoderModel."""
    from transformers import T5Config, T5EncoderModel

    cfg = T5Config(
        vocab_size=100,
        d_model=16,
        d_kv=4,
        d_ff=24,
        num_layers=2,
        num_heads=4,
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=False,
        use_cache=False,
    )
    torch.manual_seed(8)
    source = T5EncoderModel(cfg).eval()
    state = {
        k: v for k, v in source.state_dict().items() if k != "encoder.embed_tokens.weight"
    }  # tied copy left out
    path = tmp_path / "des_t5.pt"
    torch.save({"model_state_dict": state, "is_t5": True, "using_text_encoder": 3}, path)
    with pytest.raises(IncompatibleEncoderError, match="pass base="):
        load_safe_text_encoder(path, "text_encoder_3", model_class=T5EncoderModel, allow_pickle=True)
    loaded = load_safe_text_encoder(
        path, "text_encoder_3", model_class=T5EncoderModel, allow_pickle=True, base=T5EncoderModel(cfg)
    )
    tokens = torch.randint(0, 100, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(tokens).last_hidden_state, source(tokens).last_hidden_state)
    check_encoder(loaded, SlotExpectation("text_encoder_3", 16, 100, 1, 256, model_class=T5EncoderModel))
    del state["encoder.block.1.layer.1.DenseReluDense.wo.weight"]
    torch.save({"model_state_dict": state}, path)
    with pytest.raises(IncompatibleEncoderError, match="DenseReluDense.wo.weight"):
        load_safe_text_encoder(
            path, "text_encoder_3", model_class=T5EncoderModel, allow_pickle=True, base=T5EncoderModel(cfg)
        )
