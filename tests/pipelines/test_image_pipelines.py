"""img2img, inpainting and ControlNet Safer pipelines (SD and SDXL) against plain diffusers on tiny models.

For each: the safe encoder conditions the model (the images equal the plain parent pipeline with the safe
encoder in its slot, and differ from the original's), ``safety_scale=0`` equals the plain pipeline bit for bit,
compare mode shares the UNet and its originals equal a plain run from the same generator, and save/load keeps
the images.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import (
    ControlNetModel,
    StableDiffusionControlNetPipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionXLControlNetPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
)
from PIL import Image

from saferclip_diffusers import (
    SaferStableDiffusionControlNetPipeline,
    SaferStableDiffusionImg2ImgPipeline,
    SaferStableDiffusionInpaintPipeline,
    SaferStableDiffusionPipeline,
    SaferStableDiffusionXLControlNetPipeline,
    SaferStableDiffusionXLImg2ImgPipeline,
    SaferStableDiffusionXLInpaintPipeline,
    SaferStableDiffusionXLPipeline,
)

CASES = {
    "sd-img2img": (SaferStableDiffusionImg2ImgPipeline, StableDiffusionImg2ImgPipeline, False),
    "sd-inpaint": (SaferStableDiffusionInpaintPipeline, StableDiffusionInpaintPipeline, False),
    "sd-controlnet": (SaferStableDiffusionControlNetPipeline, StableDiffusionControlNetPipeline, False),
    "sdxl-img2img": (SaferStableDiffusionXLImg2ImgPipeline, StableDiffusionXLImg2ImgPipeline, True),
    "sdxl-inpaint": (SaferStableDiffusionXLInpaintPipeline, StableDiffusionXLInpaintPipeline, True),
    "sdxl-controlnet": (SaferStableDiffusionXLControlNetPipeline, StableDiffusionXLControlNetPipeline, True),
}


def picture(seed: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).convert(mode)


def inputs(case: str) -> dict:
    if "img2img" in case:
        return {"image": picture(1), "strength": 0.75, "num_inference_steps": 3}
    if "inpaint" in case:
        mask = Image.new("L", (32, 32), 0)
        mask.paste(255, (0, 0, 16, 32))
        return {"image": picture(1), "mask_image": mask, "num_inference_steps": 2, "height": 32, "width": 32}
    return {"image": picture(2), "num_inference_steps": 2}


def run(pipe, case: str, seed: int = 0, **kwargs):
    return pipe(
        "a photo of a cat",
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
        **inputs(case),
        **kwargs,
    )


@pytest.fixture(scope="module")
def bases(tiny_sd_dir, safe_sd_dir, tiny_sdxl_dir, safe_sdxl_dir):
    sd = SaferStableDiffusionPipeline.from_pretrained(
        tiny_sd_dir, safe_text_encoder=safe_sd_dir, keep_original=True
    )
    sdxl = SaferStableDiffusionXLPipeline.from_pretrained(
        tiny_sdxl_dir, safe_text_encoder=safe_sdxl_dir, keep_original=True
    )
    return {False: sd, True: sdxl}


@pytest.fixture(scope="module")
def pipes(bases):
    """Each case: the Safer pipeline and the plain parent sharing its modules with the original encoders."""
    built = {}
    for case, (safer_cls, plain_cls, xl) in CASES.items():
        extra = {}
        if "controlnet" in case:
            torch.manual_seed(0)
            extra["controlnet"] = ControlNetModel.from_unet(
                bases[xl].unet, conditioning_embedding_out_channels=(8, 16)
            )
        safer = safer_cls.from_pipe(bases[xl], **extra)
        originals = {slot: safer.original_encoder(slot) for slot, _ in safer._slots}
        built[case] = (safer, plain_cls.from_pipe(safer, **originals, **extra))
    return built


@pytest.mark.parametrize("case", list(CASES))
def test_safe_encoder_conditions_and_scale_zero_is_plain(pipes, case):
    safer, plain = pipes[case]
    assert type(plain) is CASES[case][1] and plain.unet is safer.unet
    with_safe = CASES[case][1].from_pipe(plain, **{slot: getattr(safer, slot) for slot, _ in safer._slots})
    safe_images = run(safer, case).images
    np.testing.assert_array_equal(safe_images, run(with_safe, case).images)
    original = run(plain, case).images
    np.testing.assert_array_equal(run(safer, case, safety_scale=0.0).images, original)
    assert np.abs(safe_images - original).max() > 1e-4


@pytest.mark.parametrize("case", list(CASES))
def test_compare_mode_originals_equal_a_plain_run(pipes, case):
    safer, plain = pipes[case]
    out = run(safer, case, return_original=True)  # ControlNet: one batch, equal up to batched-kernel rounding
    check = (
        np.testing.assert_array_equal
        if "controlnet" not in case
        else lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5)
    )
    check(out.original_images, run(plain, case).images)
    check(out.images, run(safer, case).images)
    assert len(out.redirection_scores) == 1


@pytest.mark.parametrize("case", ["sd-img2img", "sdxl-controlnet"])
def test_save_load_round_trip(pipes, case, tmp_path):
    safer, _ = pipes[case]
    safer.save_pretrained(tmp_path)
    extra = {"controlnet": safer.controlnet} if "controlnet" in case else {}
    reloaded = CASES[case][0].from_pretrained(tmp_path, keep_original=True, **extra)
    assert reloaded.safe_slots == safer.safe_slots
    np.testing.assert_array_equal(
        run(reloaded, case, safety_scale=0.5).images, run(safer, case, safety_scale=0.5).images
    )


def test_controlnet_compare_in_one_batch_equals_two_passes(pipes):
    safer, plain = pipes["sd-controlnet"]
    one = run(safer, "sd-controlnet", return_original=True)
    two = run(safer, "sd-controlnet", return_original=True, compare_in_one_batch=False)
    np.testing.assert_allclose(one.images, two.images, atol=1e-5)
    np.testing.assert_allclose(one.original_images, two.original_images, atol=1e-5)


@pytest.mark.parametrize("xl", [False, True])
def test_safe_encoder_acts_without_classifier_free_guidance(bases, xl):
    """Distilled models (SDXL-Turbo, LCM) run at guidance_scale <= 1: negative prompts and SLD cannot act there,
    the safe encoder still does."""
    pipe = bases[xl]
    kwargs = {"num_inference_steps": 1, "guidance_scale": 0.0 if xl else 1.0, "output_type": "np"}
    safe = pipe("a cat", generator=torch.Generator().manual_seed(0), **kwargs).images
    original = pipe("a cat", generator=torch.Generator().manual_seed(0), safety_scale=0.0, **kwargs).images
    assert np.abs(safe - original).max() > 1e-4
