"""Safe-encoder resolution (layouts, pickle policy) and the validation errors of the Safer pipelines."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import CLIPModel, CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from saferclip_diffusers import SaferStableDiffusionPipeline, SaferStableDiffusionXLPipeline
from saferclip_diffusers.encoders import (
    IncompatibleEncoderError,
    PickleCheckpointError,
    load_safe_text_encoder,
    read_training_prompts,
)
from saferclip_diffusers.tiny import tiny_model_dir


@pytest.fixture(scope="module")
def clip_dir():
    return tiny_model_dir("clip")


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_all_layouts_give_the_same_text_tower(clip_dir, tmp_path):
    full = CLIPModel.from_pretrained(clip_dir)
    from_clipmodel = load_safe_text_encoder(clip_dir)  # full CLIPModel directory: the text tower is taken
    bare = tmp_path / "bare"
    from_clipmodel.save_pretrained(bare)
    diffusers_layout = tmp_path / "export"
    from_clipmodel.save_pretrained(diffusers_layout / "text_encoder")
    expected = _state(from_clipmodel)
    for spec in (bare, diffusers_layout, str(diffusers_layout), from_clipmodel):
        loaded = load_safe_text_encoder(spec)
        assert isinstance(loaded, CLIPTextModel)
        for key, value in _state(loaded).items():
            torch.testing.assert_close(value, expected[key])
    torch.testing.assert_close(
        from_clipmodel.embeddings.token_embedding.weight, full.text_model.embeddings.token_embedding.weight
    )


def test_second_slot_takes_projection_class(clip_dir):
    encoder = load_safe_text_encoder(clip_dir, slot="text_encoder_2")
    assert isinstance(encoder, CLIPTextModelWithProjection)
    with pytest.raises(TypeError, match="must be a CLIPTextModelWithProjection"):
        load_safe_text_encoder(CLIPTextModel.from_pretrained(clip_dir), slot="text_encoder_2")


def test_missing_path_is_named(tiny_sd_dir, tmp_path):
    missing = tmp_path / "no" / "such-encoder"
    with pytest.raises(FileNotFoundError, match="no/such-encoder"):
        SaferStableDiffusionPipeline.from_pretrained(tiny_sd_dir, safe_text_encoder=str(missing))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SaferStableDiffusionPipeline.from_pretrained(
            str(tmp_path / "no-base"), safe_text_encoder=str(missing)
        )


def test_missing_weights_file_is_named_not_looked_up(tmp_path):
    for spec in (tmp_path / "des.pt", "des.pt", "clip_l.safetensors"):
        with pytest.raises(FileNotFoundError, match="safe text encoder file does not exist"):
            load_safe_text_encoder(spec)


def test_directory_without_an_encoder_is_explained(tmp_path):
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="text_encoder/config.json"):
        load_safe_text_encoder(tmp_path)


def test_pickle_only_checkpoint_refused_unless_allowed(clip_dir, tmp_path):
    model = CLIPTextModel.from_pretrained(clip_dir)
    model.config.save_pretrained(tmp_path)  # a legacy checkpoint: config + pickled state dict
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    assert not list(tmp_path.glob("*.safetensors")) and list(tmp_path.glob("*.bin"))
    with pytest.raises(PickleCheckpointError, match="allow_pickle=True") as err:
        load_safe_text_encoder(tmp_path)
    assert str(tmp_path / "pytorch_model.bin") in str(err.value)  # names the exact file it refused
    loaded = load_safe_text_encoder(tmp_path, allow_pickle=True)
    torch.testing.assert_close(loaded.final_layer_norm.weight, model.final_layer_norm.weight)


def test_unavailable_hub_id_says_why(monkeypatch):
    from saferclip_diffusers.hub import ModelUnavailableError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match="someone/no-such-encoder.*offline"):
        load_safe_text_encoder("someone/no-such-encoder")


def test_folder_missing_projection_for_second_slot_is_refused(clip_dir, tmp_path):
    """A plain CLIPTextModel folder in a projection slot would leave text_projection random: refuse it."""
    CLIPTextModel.from_pretrained(clip_dir).save_pretrained(tmp_path)
    with pytest.raises(IncompatibleEncoderError, match="text_projection.*pass base="):
        load_safe_text_encoder(tmp_path, "text_encoder_2")
    base = CLIPTextModelWithProjection.from_pretrained(clip_dir)
    with torch.no_grad():
        base.text_projection.weight.mul_(2)
    loaded = load_safe_text_encoder(tmp_path, "text_encoder_2", base=base)
    torch.testing.assert_close(loaded.text_projection.weight, base.text_projection.weight, rtol=0, atol=0)


def test_hidden_size_mismatch(tiny_sd_dir):
    wide = CLIPTextModel.from_pretrained(tiny_model_dir("clip-g"))  # width 48; SD's UNet reads 32
    with pytest.raises(IncompatibleEncoderError, match="hidden size 48.*expects 32"):
        SaferStableDiffusionPipeline.from_pretrained(tiny_sd_dir, safe_text_encoder=wide)


def test_sdxl_split_is_checked(tiny_sdxl_dir, clip_dir):
    # a 32-wide encoder in the 48-wide bigG slot adds up wrong even though it is a valid CLIP model
    narrow = CLIPTextModelWithProjection.from_pretrained(clip_dir)
    with pytest.raises(IncompatibleEncoderError, match="hidden size 32.*expects 48"):
        SaferStableDiffusionXLPipeline.from_pretrained(
            tiny_sdxl_dir, safe_text_encoder=None, safe_text_encoder_2=narrow
        )


def test_sdxl_second_encoder_needs_projection(tiny_sdxl_dir):
    g_dir = tiny_model_dir("clip-g")
    no_projection = CLIPTextModel.from_pretrained(g_dir)
    with pytest.raises(TypeError, match="CLIPTextModelWithProjection"):
        SaferStableDiffusionXLPipeline.from_pretrained(
            tiny_sdxl_dir, safe_text_encoder=None, safe_text_encoder_2=no_projection
        )
    from saferclip_diffusers.encoders import SlotExpectation, check_encoder

    expectation = SlotExpectation("text_encoder_2", 48, 1000, 999, 77, projection_dim=48)
    with pytest.raises(IncompatibleEncoderError, match="no text projection"):
        check_encoder(no_projection, expectation)


def test_vocabulary_must_fit_tokenizer(tiny_sd_dir, clip_dir):
    config = CLIPTextConfig.from_pretrained(clip_dir)
    config.vocab_size = 500
    small = CLIPTextModel(config)
    with pytest.raises(IncompatibleEncoderError, match="vocabulary of 500 tokens"):
        SaferStableDiffusionPipeline.from_pretrained(tiny_sd_dir, safe_text_encoder=small)


def test_wrong_eos_id_is_refused(tiny_sd_dir, clip_dir):
    config = CLIPTextConfig.from_pretrained(clip_dir)
    config.eos_token_id = 5
    with pytest.raises(IncompatibleEncoderError, match="pools at token id 5"):
        SaferStableDiffusionPipeline.from_pretrained(tiny_sd_dir, safe_text_encoder=CLIPTextModel(config))


def test_peft_model_must_be_merged(clip_dir):
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(
        CLIPTextModel.from_pretrained(clip_dir), LoraConfig(target_modules=["k_proj"])
    )
    with pytest.raises(TypeError, match="merge_and_unload"):
        load_safe_text_encoder(peft_model)


def test_read_training_prompts(tmp_path):
    assert read_training_prompts(tmp_path) is None
    (tmp_path / "training_prompts.json").write_text(json.dumps({"unsafe": ["a", "b"], "safe": ["c"]}))
    assert read_training_prompts(tmp_path) == {"unsafe": ["a", "b"], "safe": ["c"]}


def test_sd3_clip_l_keeps_the_pipelines_projection(clip_dir):
    """SD3's CLIP-L projection is the identity: a Safe-CLIP CLIPModel's own projection must not replace it."""
    base = CLIPTextModelWithProjection.from_pretrained(clip_dir)
    with torch.no_grad():
        base.text_projection.weight.copy_(torch.eye(base.config.hidden_size))
    safe = load_safe_text_encoder(
        clip_dir, model_class=CLIPTextModelWithProjection, base=base, keep_base_projection=True
    )
    assert torch.equal(safe.text_projection.weight, torch.eye(base.config.hidden_size))
    plain = load_safe_text_encoder(clip_dir, model_class=CLIPTextModelWithProjection)
    assert not torch.equal(plain.text_projection.weight, safe.text_projection.weight)
    assert torch.equal(plain.text_model.final_layer_norm.weight, safe.text_model.final_layer_norm.weight)
