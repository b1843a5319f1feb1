"""SaferStableDiffusionXLPipeline on tiny SDXL models (two encoders: widths 32 and 48, pooled from the second)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionXLPipeline
from transformers import CLIPTextModel, CLIPTextModelWithProjection

from saferclip_diffusers import SaferStableDiffusionXLPipeline
from saferclip_diffusers.tiny import perturbed_text_encoder

STEPS = 2


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def run(pipe, prompt="a photo of a cat", seed=0, **kwargs):
    kwargs.setdefault("num_inference_steps", STEPS)
    return pipe(prompt, generator=gen(seed), output_type="np", **kwargs)


@pytest.fixture(scope="module")
def plain(tiny_sdxl_dir):
    return StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_dir)


@pytest.fixture(scope="module")
def safer(tiny_sdxl_dir, safe_sdxl_dir):
    # a diffusers-layout export with text_encoder/ and text_encoder_2/ fills both slots from one argument
    return SaferStableDiffusionXLPipeline.from_pretrained(
        tiny_sdxl_dir, safe_text_encoder=safe_sdxl_dir, keep_original=True
    )


def _ids(tokenizer, text):
    return tokenizer([text], padding="max_length", max_length=77, return_tensors="pt").input_ids


def test_both_safe_encoders_condition_the_unet(safer, spy):
    assert safer.safe_slots == ["text_encoder", "text_encoder_2"]
    recorder = spy(safer.unet)
    run(safer)
    with torch.no_grad():
        h1 = safer.text_encoder(
            _ids(safer.tokenizer, "a photo of a cat"), output_hidden_states=True
        ).hidden_states[-2]
        out2 = safer.text_encoder_2(_ids(safer.tokenizer_2, "a photo of a cat"), output_hidden_states=True)
    call = recorder.calls[0]
    torch.testing.assert_close(call["hidden"][1:], torch.cat([h1, out2.hidden_states[-2]], dim=-1))
    torch.testing.assert_close(call["text_embeds"][1:], out2.text_embeds)


def test_different_safe_encoder_changes_image(safer):
    other = perturbed_text_encoder(safer.text_encoder_2, seed=9)
    pipe = SaferStableDiffusionXLPipeline.from_pipe(safer, safe_text_encoder_2=other)
    assert pipe.text_encoder is safer.text_encoder  # slot 1 kept from the source Safer pipeline
    assert np.abs(run(pipe).images - run(safer).images).max() > 1e-3


def test_original_weights_give_identical_image(tiny_sdxl_dir, plain):
    te1 = CLIPTextModel.from_pretrained(tiny_sdxl_dir, subfolder="text_encoder")
    te2 = CLIPTextModelWithProjection.from_pretrained(tiny_sdxl_dir, subfolder="text_encoder_2")
    pipe = SaferStableDiffusionXLPipeline.from_pretrained(
        tiny_sdxl_dir, safe_text_encoder=te1, safe_text_encoder_2=te2
    )
    np.testing.assert_array_equal(run(pipe).images, run(plain).images)


def test_safety_scale_zero_equals_plain_diffusers(safer, plain):
    for kwargs in (
        {},
        {"negative_prompt": "blurry", "negative_prompt_2": "dark"},
        {"prompt_2": "a dog"},
        {"clip_skip": 1},
    ):
        np.testing.assert_array_equal(
            run(safer, safety_scale=0.0, **kwargs).images, run(plain, **kwargs).images
        )


def test_safety_scale_interpolates_hidden_and_pooled(safer, spy):
    recorder = spy(safer.unet)
    for scale in (0.0, 0.25, 1.0):
        run(safer, safety_scale=scale, num_inference_steps=1)
    (c0, c_q, c1) = recorder.calls
    torch.testing.assert_close(c_q["hidden"], c0["hidden"] + 0.25 * (c1["hidden"] - c0["hidden"]))
    torch.testing.assert_close(
        c_q["text_embeds"], c0["text_embeds"] + 0.25 * (c1["text_embeds"] - c0["text_embeds"])
    )


def test_compare_mode_shares_unet_and_matches_plain_run(safer, plain, spy):
    recorder = spy(safer.unet)
    out = run(safer, prompt=["a cat", "a dog"], return_original=True)
    assert recorder.calls[0]["hidden"].shape[0] == 2 * 2 * 2
    latents = torch.randn((2, 4, 16, 16), generator=gen(0))
    reference = plain(["a cat", "a dog"], num_inference_steps=STEPS, latents=latents, output_type="np").images
    np.testing.assert_allclose(out.original_images, reference, atol=1e-5)
    assert np.abs(out.images - out.original_images).max() > 1e-3
    assert len(out.redirection_scores) == 2


def test_only_first_encoder_safe_warns_and_keeps_bigG(tiny_sdxl_dir, safe_sd_dir, plain):
    with pytest.warns(UserWarning, match="1280 of the 2048"):
        pipe = SaferStableDiffusionXLPipeline.from_pretrained(
            tiny_sdxl_dir, safe_text_encoder=safe_sd_dir, keep_original=True
        )
    assert pipe.safe_slots == ["text_encoder"]
    assert pipe.original_text_encoder_2 is None  # the unswapped slot is its own original: no copy
    assert pipe.original_encoder("text_encoder_2") is pipe.text_encoder_2
    np.testing.assert_array_equal(run(pipe, safety_scale=0.0).images, run(plain).images)


def test_save_and_reload_round_trip(safer, tmp_path):
    safer.save_pretrained(tmp_path)
    reloaded = SaferStableDiffusionXLPipeline.from_pretrained(tmp_path)
    assert reloaded.safe_slots == ["text_encoder", "text_encoder_2"]
    np.testing.assert_array_equal(run(reloaded).images, run(safer).images)
    with_original = SaferStableDiffusionXLPipeline.from_pretrained(tmp_path, keep_original=True)
    np.testing.assert_array_equal(
        run(with_original, safety_scale=0.5).images, run(safer, safety_scale=0.5).images
    )


def test_from_pipe_shares_components_and_offload_seq(plain, safe_sdxl_dir):
    pipe = SaferStableDiffusionXLPipeline.from_pipe(plain, safe_text_encoder=safe_sdxl_dir)
    for name in ("unet", "vae", "scheduler", "tokenizer", "tokenizer_2"):
        assert getattr(pipe, name) is getattr(plain, name), name
    assert (
        pipe.original_text_encoder is plain.text_encoder
        and pipe.original_text_encoder_2 is plain.text_encoder_2
    )
    seq = pipe.model_cpu_offload_seq.split("->")
    assert {"original_text_encoder", "original_text_encoder_2"} <= set(seq)
    pipe.to(torch.bfloat16)
    assert pipe.original_text_encoder_2.dtype == torch.bfloat16


def test_prompt_with_negative_and_negative_pooled_embeds(safer):
    plain = StableDiffusionXLPipeline.from_pipe(
        safer, text_encoder=safer.original_text_encoder, text_encoder_2=safer.original_text_encoder_2
    )
    neg = torch.randn(1, 77, safer.unet.config.cross_attention_dim, generator=gen(5))
    neg_pooled = torch.randn(1, safer.text_encoder_2.config.projection_dim, generator=gen(6))
    kwargs = {"negative_prompt_embeds": neg, "negative_pooled_prompt_embeds": neg_pooled}
    np.testing.assert_array_equal(run(safer, safety_scale=0.0, **kwargs).images, run(plain, **kwargs).images)


def test_negative_prompt_reads_original_encoders_by_default(safer, spy):
    recorder = spy(safer.unet)
    for which in ("original", "safe"):
        run(safer, negative_prompt="gore", negative_prompt_encoder=which, num_inference_steps=1)
    encode = {
        "prompt": "gore",
        "device": torch.device("cpu"),
        "num_images_per_prompt": 1,
        "do_classifier_free_guidance": False,
    }
    with safer.originals_in_slots():
        orig = safer.encode_prompt(**encode)
    safe = safer.encode_prompt(**encode)
    torch.testing.assert_close(recorder.calls[0]["hidden"][:1], orig[0])
    torch.testing.assert_close(recorder.calls[0]["text_embeds"][:1], orig[2])
    torch.testing.assert_close(recorder.calls[1]["hidden"][:1], safe[0])
    torch.testing.assert_close(recorder.calls[1]["text_embeds"][:1], safe[2])


def test_textual_inversion_on_the_bigG_slot_reaches_its_original(tiny_sdxl_dir, safe_sdxl_dir):
    pipe = SaferStableDiffusionXLPipeline.from_pretrained(
        tiny_sdxl_dir, safe_text_encoder=safe_sdxl_dir, keep_original=True
    )
    plain = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_dir)
    for p in (pipe, plain):
        for te, tok, seed in ((p.text_encoder, p.tokenizer, 1), (p.text_encoder_2, p.tokenizer_2, 2)):
            emb = torch.randn(1, te.config.hidden_size, generator=gen(seed))
            p.load_textual_inversion({"<toy>": emb}, token="<toy>", text_encoder=te, tokenizer=tok)
    np.testing.assert_array_equal(
        run(pipe, prompt="a <toy>", safety_scale=0.0).images, run(plain, prompt="a <toy>").images
    )


def test_tuple_output_has_diffusers_layout(safer, tiny_sdxl_dir):
    # diffusers' SDXL returns (images,) with return_dict=False (it has no safety checker): so does the Safer one,
    # followed by the original images in compare mode
    plain = StableDiffusionXLPipeline.from_pretrained(
        tiny_sdxl_dir
    )  # the module's `plain` is cast to bf16 later
    reference = run(plain, return_dict=False)
    assert len(reference) == 1
    (images,) = run(safer, safety_scale=0.0, return_dict=False)
    np.testing.assert_array_equal(images, reference[0])
    safe, original = run(safer, return_original=True, return_dict=False)
    np.testing.assert_allclose(original, reference[0], atol=1e-5)
    assert np.abs(safe - original).max() > 1e-3
