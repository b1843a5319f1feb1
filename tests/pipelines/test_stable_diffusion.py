"""SaferStableDiffusionPipeline on tiny SD 1.x models, through the real loading paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from transformers import CLIPTextModel

from saferclip_diffusers import SaferPipelineOutput, SaferStableDiffusionPipeline
from saferclip_diffusers.tiny import perturbed_text_encoder

STEPS = 2


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def run(pipe, prompt="a photo of a cat", seed=0, **kwargs):
    kwargs.setdefault("num_inference_steps", STEPS)
    return pipe(prompt, generator=gen(seed), output_type="np", **kwargs)


@pytest.fixture(scope="module")
def plain(tiny_sd_dir):
    return StableDiffusionPipeline.from_pretrained(tiny_sd_dir)


@pytest.fixture(scope="module")
def safer(tiny_sd_dir, safe_sd_dir):
    return SaferStableDiffusionPipeline.from_pretrained(
        tiny_sd_dir, safe_text_encoder=safe_sd_dir, keep_original=True
    )


def test_safe_encoder_conditions_the_unet(safer, spy):
    recorder = spy(safer.unet)
    run(safer)
    tokens = safer.tokenizer(["a photo of a cat"], padding="max_length", max_length=77, return_tensors="pt")
    with torch.no_grad():
        safe_hidden = safer.text_encoder(tokens.input_ids).last_hidden_state
        orig_hidden = safer.original_text_encoder(tokens.input_ids).last_hidden_state
    conditioned = recorder.calls[0]["hidden"][1:]  # [uncond, cond] under classifier-free guidance
    torch.testing.assert_close(conditioned, safe_hidden)
    assert not torch.allclose(conditioned, orig_hidden)


def test_different_safe_encoder_changes_image(tiny_sd_dir, safer):
    other = perturbed_text_encoder(safer.text_encoder, seed=7)
    pipe = SaferStableDiffusionPipeline.from_pipe(safer, safe_text_encoder=other)
    assert np.abs(run(pipe).images - run(safer).images).max() > 1e-3


def test_original_weights_as_safe_encoder_give_identical_image(tiny_sd_dir, plain):
    original = CLIPTextModel.from_pretrained(tiny_sd_dir, subfolder="text_encoder")
    pipe = SaferStableDiffusionPipeline.from_pretrained(tiny_sd_dir, safe_text_encoder=original)
    np.testing.assert_array_equal(run(pipe).images, run(plain).images)


def test_safety_scale_zero_equals_plain_diffusers(safer, plain):
    for kwargs in ({}, {"negative_prompt": "blurry"}, {"guidance_scale": 1.0}):
        np.testing.assert_array_equal(
            run(safer, safety_scale=0.0, **kwargs).images, run(plain, **kwargs).images
        )


def test_clip_skip_reads_an_earlier_layer_through_the_final_norm(safer, spy):
    # diffusers 0.42's own clip_skip path fails on transformers 5 (CLIPTextModel lost .text_model); ours works
    recorder = spy(safer.unet)
    run(safer, clip_skip=1, num_inference_steps=1)
    ids = safer.tokenizer(
        ["a photo of a cat"], padding="max_length", max_length=77, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        states = safer.text_encoder(ids, output_hidden_states=True).hidden_states
        expected = safer.text_encoder.final_layer_norm(states[-2])
    torch.testing.assert_close(recorder.calls[0]["hidden"][1:], expected)


def test_safety_scale_interpolates_conditioning(safer, spy):
    recorder = spy(safer.unet)
    for scale in (0.0, 0.5, 1.0):
        run(safer, safety_scale=scale, num_inference_steps=1)
    c0, c_half, c1 = (call["hidden"] for call in recorder.calls)
    torch.testing.assert_close(c_half, (c0 + c1) / 2)
    assert not torch.allclose(c0, c1)


def test_safety_scale_out_of_range_is_refused(safer):
    # one rule for every Safer pipeline (SD3/FLUX: tests/pipelines/test_sd3.py); "0.5" and True were taken as
    # numbers here before
    for bad in (1.5, -0.1, float("nan"), "0.5", True):
        with pytest.raises(ValueError, match=r"safety_scale must be a number in \[0, 1\]"):
            run(safer, safety_scale=bad)


def test_compare_mode_shares_unet_and_matches_plain_run(safer, plain, spy):
    plain_shared = StableDiffusionPipeline.from_pipe(safer, text_encoder=safer.original_text_encoder)
    assert plain_shared.unet is safer.unet
    recorder = spy(safer.unet)
    out = run(safer, prompt=["a cat", "a dog"], return_original=True)
    assert recorder.calls[0]["hidden"].shape[0] == 2 * 2 * 2  # (safe + original) x 2 prompts x CFG: one batch
    latents = torch.randn((2, 4, 16, 16), generator=gen(0))
    reference = plain(["a cat", "a dog"], num_inference_steps=STEPS, latents=latents, output_type="np").images
    np.testing.assert_allclose(out.original_images, reference, atol=1e-5)
    assert np.abs(out.images - out.original_images).max() > 1e-3


def test_compare_mode_sequential_equals_batched(safer):
    batched = run(safer, return_original=True)
    sequential = run(safer, return_original=True, compare_in_one_batch=False)
    np.testing.assert_allclose(batched.images, sequential.images, atol=1e-5)
    np.testing.assert_allclose(batched.original_images, sequential.original_images, atol=1e-5)


def test_compare_mode_with_images_per_prompt_and_tuple_output(safer):
    images, nsfw, original_images, original_nsfw = safer(
        "a cat",
        num_inference_steps=2,
        num_images_per_prompt=2,
        generator=gen(3),
        output_type="np",
        return_original=True,
        return_dict=False,
    )
    assert images.shape == original_images.shape == (2, 32, 32, 3)
    assert not np.allclose(images[0], images[1])  # two different initial latents


def test_redirection_scores_by_their_definition(safer):
    """cos(original pooled, safe pooled) per prompt, from the two encoders by hand."""
    prompts = ["a cat", "a bloody knife"]
    out = run(safer, prompt=prompts)
    assert isinstance(out, SaferPipelineOutput)
    ids = safer.tokenizer(
        prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        original = safer.original_text_encoder(ids).pooler_output
        safe = safer.text_encoder(ids).pooler_output
    expected = torch.nn.functional.cosine_similarity(original, safe, dim=-1)
    np.testing.assert_allclose(out.redirection_scores, expected.numpy(), rtol=1e-5)
    assert max(out.redirection_scores) < 0.999  # the safe encoder moved both prompts


def test_without_original_no_extra_encoder_and_clear_errors(tiny_sd_dir, safe_sd_dir):
    pipe = SaferStableDiffusionPipeline.from_pretrained(tiny_sd_dir, safe_text_encoder=safe_sd_dir)
    assert pipe.original_text_encoder is None
    out = run(pipe)
    assert out.redirection_scores is None and out.original_images is None
    with pytest.raises(ValueError, match="keep_original=True"):
        run(pipe, safety_scale=0.5)
    with pytest.raises(ValueError, match="keep_original=True"):
        run(pipe, return_original=True)
    with pytest.warns(UserWarning, match="the safe encoders read the negative prompt"):
        with_negative = run(pipe, negative_prompt="gore", num_inference_steps=1).images
    np.testing.assert_array_equal(
        with_negative,
        run(pipe, negative_prompt="gore", negative_prompt_encoder="safe", num_inference_steps=1).images,
    )


def test_from_pipe_shares_components(plain, safe_sd_dir):
    pipe = SaferStableDiffusionPipeline.from_pipe(plain, safe_text_encoder=safe_sd_dir)
    for name in ("unet", "vae", "scheduler", "tokenizer"):
        assert getattr(pipe, name) is getattr(plain, name), name
    assert pipe.original_text_encoder is plain.text_encoder
    assert pipe.text_encoder is not plain.text_encoder
    np.testing.assert_array_equal(run(pipe, safety_scale=0.0).images, run(plain).images)


def test_save_and_reload_round_trip(safer, tmp_path):
    safer.save_pretrained(tmp_path)
    reloaded = SaferStableDiffusionPipeline.from_pretrained(tmp_path)  # keeps its own safe encoder
    assert reloaded.safe_slots == ["text_encoder"] and reloaded.original_text_encoder is None
    np.testing.assert_array_equal(run(reloaded).images, run(safer).images)
    with_original = SaferStableDiffusionPipeline.from_pretrained(tmp_path, keep_original=True)
    np.testing.assert_array_equal(
        run(with_original, safety_scale=0.3).images, run(safer, safety_scale=0.3).images
    )
    # plain diffusers reads the published repository too, and gets the safe encoder
    vanilla = StableDiffusionPipeline.from_pretrained(tmp_path)
    np.testing.assert_array_equal(run(vanilla).images, run(safer).images)


def test_dtype_and_offload_cover_the_original_encoder(tiny_sd_dir, safe_sd_dir):
    pipe = SaferStableDiffusionPipeline.from_pretrained(
        tiny_sd_dir, safe_text_encoder=safe_sd_dir, keep_original=True
    )
    pipe.to(torch.bfloat16)
    assert pipe.original_text_encoder.dtype == torch.bfloat16 == pipe.text_encoder.dtype
    assert "original_text_encoder" in pipe.model_cpu_offload_seq.split("->")
    pipe.to(torch.float32).enable_model_cpu_offload(device="cpu")
    assert hasattr(pipe.original_text_encoder, "_hf_hook")
    assert run(pipe, return_original=True, num_inference_steps=1).original_images.shape == (1, 32, 32, 3)


def test_torch_dtype_at_load_applies_to_safe_and_original(tiny_sd_dir, safe_sd_dir):
    pipe = SaferStableDiffusionPipeline.from_pretrained(
        tiny_sd_dir, safe_text_encoder=safe_sd_dir, keep_original=True, torch_dtype=torch.bfloat16
    )
    assert pipe.text_encoder.dtype == pipe.original_text_encoder.dtype == pipe.unet.dtype == torch.bfloat16


def test_allow_pickle_still_loads_a_safetensors_base(tiny_sd_dir, safe_sd_dir, plain):
    # allow_pickle widens what may be read; the base's original encoder (safetensors only) must still load
    pipe = SaferStableDiffusionPipeline.from_pretrained(
        tiny_sd_dir, safe_text_encoder=safe_sd_dir, keep_original=True, allow_pickle=True
    )
    np.testing.assert_array_equal(run(pipe, safety_scale=0.0).images, run(plain).images)
