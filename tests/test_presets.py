from __future__ import annotations

import pytest
import torch

from saferclip_diffusers import PRESETS, SaferStableDiffusionXLPipeline, get_preset, load_preset_pipeline
from saferclip_diffusers.presets import register_preset


def test_real_presets_name_real_models_with_explicit_flags():
    assert get_preset("sd14").base == "CompVis/stable-diffusion-v1-4"  # the I2P protocol's model
    sd15 = get_preset("sd15")
    assert (
        sd15.base == "stable-diffusion-v1-5/stable-diffusion-v1-5"
        and sd15.safe_text_encoder == "Adeely93/SafeR_CLIP"
    )
    assert get_preset("sdxl").sdxl and get_preset("sdxl").height == 1024
    assert get_preset("sd3").family == "sd3" and get_preset("flux").base == "black-forest-labs/FLUX.1-dev"
    for name in ("sd14", "sd15", "sdxl", "sd3", "flux"):
        preset = get_preset(name)
        assert not preset.random_weights and not preset.offline, name
    assert sd15.dtype_for("cuda") == torch.float16 and sd15.dtype_for("cpu") == torch.float32


def test_tiny_presets_carry_flags_not_path_conventions():
    for name in ("tiny", "tiny-sdxl"):
        preset = get_preset(name)
        assert preset.random_weights and preset.offline
    # the flags, not the folder name, decide: a real-named preset pointed at a tiny folder stays "real"
    moved = get_preset("sd15", base=get_preset("tiny").base)
    assert not moved.random_weights and not moved.offline


def test_overrides_unknown_names_and_registration():
    assert get_preset("tiny", num_inference_steps=2).num_inference_steps == 2
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("sd9")
    with pytest.raises(ValueError, match="unknown preset fields"):
        get_preset("tiny", steps=2)
    with pytest.raises(ValueError, match="already exists"):
        register_preset("tiny", PRESETS["tiny"])


def test_tiny_sdxl_preset_loads_offline_with_both_slots():
    pipe = load_preset_pipeline("tiny-sdxl")
    assert isinstance(pipe, SaferStableDiffusionXLPipeline)
    assert pipe.safe_slots == ["text_encoder", "text_encoder_2"] and pipe.has_original


@pytest.mark.parametrize(
    "name, cls", [("tiny-sd3", "SaferStableDiffusion3Pipeline"), ("tiny-flux", "SaferFluxPipeline")]
)
def test_tiny_sd3_and_flux_presets_load_their_safer_pipeline_with_the_safe_encoders(name, cls):
    preset = get_preset(name)
    assert preset.random_weights and preset.offline and preset.family in name
    pipe = load_preset_pipeline(name)
    assert type(pipe).__name__ == cls
    out = pipe(
        "a cat on a sofa",
        height=preset.height,
        width=preset.width,
        num_inference_steps=1,
        guidance_scale=preset.guidance_scale,
        generator=torch.Generator().manual_seed(0),
        return_original=True,
    )
    assert out.images[0].size == (preset.width, preset.height)
    assert (
        out.redirection_scores[0] < 0.999
    )  # the preset's safe encoders, not the originals, condition the model
