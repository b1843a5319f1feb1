from __future__ import annotations

import pytest
import torch

from saferclip_diffusers import SaferStableDiffusionXLPipeline, get_preset, load_preset_pipeline


def test_real_presets_name_real_models():
    sd15 = get_preset("sd15")
    assert sd15.base == "stable-diffusion-v1-5/stable-diffusion-v1-5" and sd15.safe_text_encoder == "Adeely93/SafeR_CLIP"
    assert get_preset("sdxl").sdxl and get_preset("sdxl").height == 1024
    assert get_preset("sd15").dtype_for("cuda") == torch.float16 and get_preset("sd15").dtype_for("cpu") == torch.float32


def test_overrides_and_unknown_names():
    assert get_preset("tiny", num_inference_steps=2).num_inference_steps == 2
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("sd3")
    with pytest.raises(ValueError, match="unknown preset fields"):
        get_preset("tiny", steps=2)


def test_tiny_sdxl_preset_loads_offline_with_both_slots():
    pipe = load_preset_pipeline("tiny-sdxl")
    assert isinstance(pipe, SaferStableDiffusionXLPipeline)
    assert pipe.safe_slots == ["text_encoder", "text_encoder_2"] and pipe.has_original
