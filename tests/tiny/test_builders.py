"""The tiny offline models: deterministic from a seed, coherent across the tiny chain (SD, SDXL, SD3, FLUX)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import CLIPModel, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer, T5EncoderModel

from saferclip_diffusers import tiny


def test_builders_are_deterministic_from_seed(tmp_path):
    a = load_file(tiny.build_tiny_clip(tmp_path / "a", seed=3) / "model.safetensors")
    b = load_file(tiny.build_tiny_clip(tmp_path / "b", seed=3) / "model.safetensors")
    c = load_file(tiny.build_tiny_clip(tmp_path / "c", seed=4) / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_sd_text_encoder_is_the_tiny_clip_text_tower():
    clip = CLIPModel.from_pretrained(tiny.tiny_model_dir("clip"))
    te = CLIPTextModel.from_pretrained(tiny.tiny_model_dir("sd"), subfolder="text_encoder")
    torch.testing.assert_close(
        te.embeddings.token_embedding.weight, clip.text_model.embeddings.token_embedding.weight
    )
    tok = CLIPTokenizer.from_pretrained(tiny.tiny_model_dir("sd"), subfolder="tokenizer")
    assert te.config.eos_token_id == tok.eos_token_id


def test_sdxl_layout_widths():
    root = tiny.tiny_model_dir("sdxl")
    unet = json.loads((root / "unet" / "config.json").read_text())
    assert unet["cross_attention_dim"] == tiny.TEXT_WIDTH + tiny.TEXT_WIDTH_G
    tok2 = json.loads((root / "tokenizer_2" / "tokenizer_config.json").read_text())
    assert tok2["pad_token"] == "!"


def test_cache_is_atomic_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("SAFERCLIP_TINY_CACHE", str(tmp_path))
    first = tiny.tiny_model_dir("clip", seed=5)
    assert (first / ".complete").is_file()
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert tiny.tiny_model_dir("clip", seed=5) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp
    assert not [p for p in tmp_path.rglob("*clip-seed5.*")]  # no temporary build directories left behind
    with pytest.raises(ValueError, match="unknown tiny model kind 'unet'; choose one of clip, clip-g, t5"):
        tiny.tiny_model_dir("unet")


def _config(root, sub):
    return json.loads((root / sub / "config.json").read_text())


def test_sd3_layout_matches_sd3_routing():
    root = tiny.tiny_model_dir("sd3")
    index = json.loads((root / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusion3Pipeline"
    assert index["text_encoder_3"] == ["transformers", "T5EncoderModel"]
    transformer = _config(root, "transformer")
    l_proj, g_proj = (_config(root, s)["projection_dim"] for s in ("text_encoder", "text_encoder_2"))
    assert (
        transformer["pooled_projection_dim"] == l_proj + g_proj
    )  # pooled = [CLIP-L text_embeds, CLIP-G text_embeds]
    assert transformer["joint_attention_dim"] == _config(root, "text_encoder_3")["d_model"] == tiny.T5_WIDTH
    assert (
        tiny.TEXT_WIDTH + tiny.TEXT_WIDTH_G <= tiny.T5_WIDTH
    )  # the CLIP channels are zero-padded up to T5's
    assert _config(root, "vae")["latent_channels"] == transformer["in_channels"] == 16
    tok2 = json.loads((root / "tokenizer_2" / "tokenizer_config.json").read_text())
    assert tok2["pad_token"] == "!"


def test_sd3_clip_g_is_the_sdxl_big_g():
    """As with the real models, SDXL's bigG and SD3's CLIP-G are the same architecture (here: the same weights)."""
    g_sd3 = CLIPTextModelWithProjection.from_pretrained(
        tiny.tiny_model_dir("sd3"), subfolder="text_encoder_2"
    )
    g_sdxl = CLIPTextModelWithProjection.from_pretrained(
        tiny.tiny_model_dir("sdxl"), subfolder="text_encoder_2"
    )
    assert g_sd3.config.to_diff_dict() == g_sdxl.config.to_diff_dict()
    for (name, a), (_, b) in zip(g_sd3.state_dict().items(), g_sdxl.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_flux_layout_matches_flux_routing():
    root = tiny.tiny_model_dir("flux")
    index = json.loads((root / "model_index.json").read_text())
    assert index["_class_name"] == "FluxPipeline"
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"]
    assert index["text_encoder_2"] == ["transformers", "T5EncoderModel"]
    transformer = _config(root, "transformer")
    assert (
        transformer["pooled_projection_dim"] == _config(root, "text_encoder")["hidden_size"]
    )  # unprojected pooler
    assert transformer["joint_attention_dim"] == _config(root, "text_encoder_2")["d_model"]
    assert transformer["in_channels"] == 4 * _config(root, "vae")["latent_channels"]  # 2x2 packed latents
    clip = CLIPModel.from_pretrained(tiny.tiny_model_dir("clip"))
    te = CLIPTextModel.from_pretrained(root, subfolder="text_encoder")
    torch.testing.assert_close(
        te.embeddings.token_embedding.weight, clip.text_model.embeddings.token_embedding.weight
    )


def test_safe_stand_ins_fill_each_slot_with_a_perturbed_copy():
    safe3, safe_flux = tiny.tiny_model_dir("safe-sd3"), tiny.tiny_model_dir("safe-flux")
    t5 = T5EncoderModel.from_pretrained(tiny.tiny_model_dir("t5"))
    safe_t5 = T5EncoderModel.from_pretrained(safe3, subfolder="text_encoder_3")
    assert not torch.equal(t5.shared.weight, safe_t5.shared.weight)
    flux_t5 = T5EncoderModel.from_pretrained(safe_flux, subfolder="text_encoder_2")  # FLUX's T5 slot
    torch.testing.assert_close(flux_t5.shared.weight, safe_t5.shared.weight)
    g3 = CLIPTextModelWithProjection.from_pretrained(safe3, subfolder="text_encoder_2")
    gxl = CLIPTextModelWithProjection.from_pretrained(
        tiny.tiny_model_dir("safe-sdxl"), subfolder="text_encoder_2"
    )
    torch.testing.assert_close(g3.text_projection.weight, gxl.text_projection.weight)


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_damaged_cache_is_rebuilt_with_a_warning(tmp_path, monkeypatch, damage):
    from saferclip_diffusers.tiny import cache

    monkeypatch.setenv("SAFERCLIP_TINY_CACHE", str(tmp_path))
    folder = tiny.tiny_model_dir("clip", seed=6)
    weights = folder / "model.safetensors"
    good = weights.read_bytes()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert "model.safetensors" in manifest and "tokenizer_config.json" in manifest
    if damage == "truncate":
        weights.write_bytes(good[: len(good) // 2])
    else:
        weights.unlink()
    cache._VERIFIED.clear()  # a new process: the folder is checked again
    with pytest.warns(
        UserWarning, match=r"clip-seed6 is damaged \(model.safetensors (does not match|is missing)"
    ):
        again = tiny.tiny_model_dir("clip", seed=6)
    assert again == folder and weights.read_bytes() == good
    assert not [p for p in tmp_path.rglob("*damaged*")]
