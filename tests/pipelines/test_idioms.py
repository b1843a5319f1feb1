"""Everyday diffusers idioms on a Safer pipeline (issue 12 §1), each against plain diffusers on tiny SD models."""

from __future__ import annotations

import inspect
import json
import threading
import time

import numpy as np
import pytest
import torch
from diffusers import (
    AutoPipelineForImage2Image,
    AutoPipelineForInpainting,
    AutoPipelineForText2Image,
    DiffusionPipeline,
    EulerAncestralDiscreteScheduler,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionPipeline,
)
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
from transformers import CLIPTextModel

from saferclip_diffusers import (
    SaferStableDiffusionImg2ImgPipeline,
    SaferStableDiffusionInpaintPipeline,
    SaferStableDiffusionPipeline,
)

STEPS = 2


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def run(pipe, *args, prompt="a photo of a cat", seed=0, **kwargs):
    kwargs.setdefault("num_inference_steps", STEPS)
    return pipe(prompt, *args, generator=gen(seed), output_type="np", **kwargs).images


@pytest.fixture(scope="module")
def plain(tiny_sd_dir):
    return StableDiffusionPipeline.from_pretrained(tiny_sd_dir)


@pytest.fixture(scope="module")
def safer(tiny_sd_dir, safe_sd_dir):
    return SaferStableDiffusionPipeline.from_pretrained(
        tiny_sd_dir, safe_text_encoder=safe_sd_dir, keep_original=True
    )


def fresh(tiny_sd_dir, safe_sd_dir):
    return (
        SaferStableDiffusionPipeline.from_pretrained(
            tiny_sd_dir, safe_text_encoder=safe_sd_dir, keep_original=True
        ),
        StableDiffusionPipeline.from_pretrained(tiny_sd_dir),
    )


# ---------------------------------------------------------------- signature


def test_call_signature_is_the_parents_then_ours(safer):
    parent = list(inspect.signature(StableDiffusionPipeline.__call__).parameters)
    ours = list(inspect.signature(SaferStableDiffusionPipeline.__call__).parameters)
    assert ours[: len(parent) - 1] == parent[:-1] and ours[-1] == parent[-1] == "kwargs"
    assert ours[len(parent) - 1 : -1] == [
        "safety_scale",
        "return_original",
        "compare_in_one_batch",
        "negative_prompt_encoder",
    ]
    assert "guidance_scale" in inspect.signature(safer.__call__).parameters
    assert "safety_scale" in SaferStableDiffusionPipeline.__call__.__doc__


def test_positional_call_like_diffusers(safer, plain):
    # prompt, height, width, num_inference_steps, timesteps, sigmas, guidance_scale
    a = safer("a cat", 32, 32, 1, None, None, 3.0, generator=gen(), output_type="np", safety_scale=0.0).images
    b = plain("a cat", 32, 32, 1, None, None, 3.0, generator=gen(), output_type="np").images
    np.testing.assert_array_equal(a, b)


def test_prompt_with_negative_prompt_embeds(safer, plain):
    neg = torch.randn(1, 77, safer.text_encoder.config.hidden_size, generator=gen(5))
    np.testing.assert_array_equal(
        run(safer, safety_scale=0.0, negative_prompt_embeds=neg), run(plain, negative_prompt_embeds=neg)
    )


# ---------------------------------------------------------------- components and generic loaders


def test_components_without_original_build_other_pipelines(tiny_sd_dir, safe_sd_dir):
    pipe = SaferStableDiffusionPipeline.from_pretrained(tiny_sd_dir, safe_text_encoder=safe_sd_dir)
    assert "original_text_encoder" not in pipe.components
    img2img = StableDiffusionImg2ImgPipeline(**pipe.components)
    assert img2img.text_encoder is pipe.text_encoder


def test_saved_folder_loads_with_generic_diffusers_loaders(safer, tmp_path):
    safer.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["_safer_class_name"] == "SaferStableDiffusionPipeline"
    reference = run(safer)
    for loader in (DiffusionPipeline, AutoPipelineForText2Image):
        pipe = loader.from_pretrained(tmp_path)
        assert isinstance(pipe, StableDiffusionPipeline)
        np.testing.assert_array_equal(run(pipe), reference)  # the safe encoder sits in text_encoder


def test_auto_pipelines_from_pipe_give_the_safer_sibling(safer):
    img2img = AutoPipelineForImage2Image.from_pipe(safer)
    inpaint = AutoPipelineForInpainting.from_pipe(safer)
    assert (
        type(img2img) is SaferStableDiffusionImg2ImgPipeline
        and type(inpaint) is SaferStableDiffusionInpaintPipeline
    )
    assert img2img.original_text_encoder is safer.original_text_encoder and img2img.safe_slots == [
        "text_encoder"
    ]
    assert type(AutoPipelineForText2Image.from_pipe(img2img)) is SaferStableDiffusionPipeline


def test_user_subclass_loads_like_its_parent(tiny_sd_dir, safe_sd_dir, safer, monkeypatch):
    import saferclip_diffusers.pipelines.base as base

    calls = []
    original = base.load_safer_pipeline
    monkeypatch.setattr(base, "load_safer_pipeline", lambda *a, **k: calls.append(a[0]) or original(*a, **k))

    class MyPipeline(SaferStableDiffusionPipeline):
        pass

    pipe = MyPipeline.from_pretrained(tiny_sd_dir, safe_text_encoder=safe_sd_dir)
    assert type(pipe) is MyPipeline and calls == [MyPipeline]  # entered once, no default hub encoder fetched
    np.testing.assert_array_equal(run(pipe), run(safer))


def test_missing_local_base_names_the_directory_not_the_hub(tmp_path):
    with pytest.raises(FileNotFoundError, match="base pipeline directory does not exist") as err:
        SaferStableDiffusionPipeline.from_pretrained(str(tmp_path / "nope"), safe_text_encoder=None)
    assert "huggingface" not in str(err.value)


# ---------------------------------------------------------------- negative prompts


def test_negative_prompt_encoder_original_and_safe(safer, spy):
    recorder = spy(safer.unet)
    for which in ("original", "safe"):
        run(safer, negative_prompt="blurry, gore", negative_prompt_encoder=which, num_inference_steps=1)
    ids = safer.tokenizer(
        ["blurry, gore"], padding="max_length", max_length=77, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        orig = safer.original_text_encoder(ids).last_hidden_state
        safe = safer.text_encoder(ids).last_hidden_state
    torch.testing.assert_close(recorder.calls[0]["hidden"][:1], orig)  # [negative, positive] under CFG
    torch.testing.assert_close(recorder.calls[1]["hidden"][:1], safe)
    with pytest.raises(ValueError, match="negative_prompt_encoder"):
        run(safer, negative_prompt_encoder="both")


def test_unconditional_branch_follows_the_positive_encoder(safer, spy):
    recorder = spy(safer.unet)
    run(
        safer, num_inference_steps=1
    )  # no negative prompt: "" through the safe encoder, as plain diffusers would
    ids = safer.tokenizer([""], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(recorder.calls[0]["hidden"][:1], safer.text_encoder(ids).last_hidden_state)


# ---------------------------------------------------------------- compare mode


def test_compare_in_one_batch_with_string_negative_prompt(safer, plain):
    # before the fix: TypeError, the doubled prompt became a list beside a string negative prompt
    out = safer(
        "a cat",
        num_inference_steps=1,
        generator=gen(),
        output_type="np",
        return_original=True,
        negative_prompt="blurry",
    )
    reference = run(plain, prompt="a cat", negative_prompt="blurry", num_inference_steps=1)
    np.testing.assert_allclose(out.original_images, reference, atol=1e-5)


def test_compare_mode_with_ancestral_sampler_equals_plain_run(tiny_sd_dir, safe_sd_dir):
    pipe, plain = fresh(tiny_sd_dir, safe_sd_dir)
    for p in (pipe, plain):
        p.scheduler = EulerAncestralDiscreteScheduler.from_config(p.scheduler.config)
    out = pipe(
        "a cat",
        num_inference_steps=STEPS,
        generator=gen(),
        output_type="np",
        return_original=True,
        compare_in_one_batch=False,
    )
    np.testing.assert_array_equal(out.original_images, run(plain, prompt="a cat"))
    np.testing.assert_array_equal(out.images, run(pipe, prompt="a cat"))


# ---------------------------------------------------------------- textual inversion and LoRA


def test_textual_inversion_reaches_both_encoders(tiny_sd_dir, safe_sd_dir, spy):
    pipe, plain = fresh(tiny_sd_dir, safe_sd_dir)
    width = pipe.text_encoder.config.hidden_size
    embedding = torch.randn(2, width, generator=gen(3))  # a two-vector embedding
    for p in (pipe, plain):
        p.load_textual_inversion({"<toy>": embedding.clone()}, token="<toy>")
    # before the fix: IndexError (original encoder not resized)
    np.testing.assert_array_equal(run(pipe, prompt="a <toy>", safety_scale=0.0), run(plain, prompt="a <toy>"))
    recorder = spy(pipe.unet)
    run(pipe, prompt="a <toy>", num_inference_steps=1)
    reference = StableDiffusionPipeline.from_pipe(
        plain, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer
    )
    expected, _ = reference.encode_prompt("a <toy>", "cpu", 1, False)
    torch.testing.assert_close(
        recorder.calls[0]["hidden"][1:], expected
    )  # both vectors, via maybe_convert_prompt


def _text_encoder_lora(tiny_sd_dir) -> dict[str, torch.Tensor]:
    te = CLIPTextModel.from_pretrained(tiny_sd_dir, subfolder="text_encoder")
    torch.manual_seed(0)
    inject_adapter_in_model(LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False), te)
    return {f"text_encoder.{k}": v for k, v in get_peft_model_state_dict(te).items()}


def test_text_encoder_lora_applies_to_both_encoders_and_scales(tiny_sd_dir, safe_sd_dir, spy):
    pipe, plain = fresh(tiny_sd_dir, safe_sd_dir)
    recorder = spy(pipe.unet)
    run(pipe, num_inference_steps=1)  # conditioning before the LoRA
    lora = _text_encoder_lora(tiny_sd_dir)
    for p in (pipe, plain):
        p.load_lora_weights(dict(lora), adapter_name="style")
    assert "style" in pipe.original_text_encoder.peft_config
    for kwargs in ({}, {"cross_attention_kwargs": {"scale": 0.3}}):
        np.testing.assert_array_equal(run(pipe, safety_scale=0.0, **kwargs), run(plain, **kwargs))
    out = pipe(
        "a photo of a cat",
        num_inference_steps=STEPS,
        generator=gen(),
        output_type="np",
        return_original=True,
        compare_in_one_batch=False,
    )  # two passes: bit for bit
    np.testing.assert_array_equal(out.original_images, run(plain))
    run(pipe, num_inference_steps=1, cross_attention_kwargs={"scale": 0.0})
    run(pipe, num_inference_steps=1)
    before, scale0, scale1 = (recorder.calls[i]["hidden"] for i in (0, -2, -1))
    torch.testing.assert_close(scale0, before)  # the LoRA scale acts on the text side
    assert not torch.allclose(scale1, before)
    pipe.set_adapters(["style"], adapter_weights=[0.5])
    plain.set_adapters(["style"], adapter_weights=[0.5])
    np.testing.assert_array_equal(run(pipe, safety_scale=0.0), run(plain))
    pipe.fuse_lora()
    plain.fuse_lora()
    pipe.unload_lora_weights()  # fused into both encoders: unloading the adapters keeps the fused weights
    plain.unload_lora_weights()
    assert (
        not hasattr(pipe.original_text_encoder, "peft_config") or not pipe.original_text_encoder.peft_config
    )
    np.testing.assert_allclose(run(pipe, safety_scale=0.0), run(plain), atol=1e-5)


# ---------------------------------------------------------------- threads


def test_two_threads_on_one_pipeline_run_one_after_the_other(safer):
    expected = {p: run(safer, prompt=p) for p in ("a cat", "a dog")}
    inside, overlap, results = [], [], {}

    def on_step(pipe, step, timestep, kwargs):
        inside.append(threading.get_ident())
        if len(set(inside)) > 1 and inside[-2] != inside[-1] and step > 0:
            overlap.append(step)  # a step of one call between two steps of the other
        time.sleep(0.05)
        return kwargs

    def work(prompt):
        results[prompt] = run(safer, prompt=prompt, callback_on_step_end=on_step)

    threads = [threading.Thread(target=work, args=(p,)) for p in expected]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not overlap
    for prompt, image in expected.items():
        np.testing.assert_array_equal(results[prompt], image)


def test_dtype_by_name_as_on_the_command_line(tiny_sd_dir, safe_sd_dir):
    pipe = SaferStableDiffusionPipeline.from_pretrained(
        tiny_sd_dir, safe_text_encoder=safe_sd_dir, keep_original=True, dtype="bf16"
    )
    assert pipe.text_encoder.dtype == pipe.original_text_encoder.dtype == pipe.unet.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        SaferStableDiffusionPipeline.from_pretrained(
            tiny_sd_dir, safe_text_encoder=safe_sd_dir, dtype="float13"
        )
