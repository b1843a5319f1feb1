"""Resolving --model / --safe-encoder and loading the demo's pipeline (tiny models, real loading paths)."""

from __future__ import annotations

import json

import pytest
import torch

from saferclip_diffusers.demo.loading import encoder_specs, load_demo_pipeline, resolve_model
from saferclip_diffusers.hub import ModelUnavailableError
from saferclip_diffusers.pipelines.loading import DEFAULT
from saferclip_diffusers.tiny import tiny_model_dir


def test_resolve_model_accepts_presets_and_pipeline_directories(tmp_path):
    assert resolve_model("tiny").name == "tiny" and not resolve_model("tiny").sdxl
    custom = resolve_model(str(tiny_model_dir("sdxl")))
    assert custom.sdxl and custom.base == str(tiny_model_dir("sdxl")) and custom.name == custom.base
    assert (custom.height, custom.width, custom.guidance_scale) == (32, 32, 5.0)  # native size, SDXL guidance
    assert not resolve_model(str(tiny_model_dir("sd"))).sdxl
    with pytest.raises(FileNotFoundError, match="--model pipeline directory does not exist"):
        resolve_model(str(tmp_path / "nothing-here"))
    with pytest.raises(ValueError, match="not a diffusers pipeline folder"):
        resolve_model(str(tmp_path))
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusion3Pipeline"}))
    with pytest.raises(ValueError, match="needs SD 1.x/2.x or SDXL"):
        resolve_model(str(tmp_path))


def test_encoder_specs_follow_presets_and_pipeline_defaults():
    tiny_xl = resolve_model("tiny-sdxl")
    assert encoder_specs(tiny_xl) == {
        "safe_text_encoder": tiny_xl.safe_text_encoder,
        "safe_text_encoder_2": tiny_xl.safe_text_encoder_2,
    }
    # a new CLIP-L encoder alone: the bigG slot comes from it when it is a two-slot export (DEFAULT)
    assert encoder_specs(tiny_xl, "some/export") == {
        "safe_text_encoder": "some/export",
        "safe_text_encoder_2": DEFAULT,
    }
    custom = resolve_model(str(tiny_model_dir("sd")))
    assert encoder_specs(custom) == {"safe_text_encoder": DEFAULT}
    with pytest.raises(ValueError, match="--safe-encoder-2 is for SDXL"):
        encoder_specs(custom, None, "x")


def test_a_custom_directory_loads_with_a_given_safe_encoder_and_no_checker():
    base = str(tiny_model_dir("sd"))
    pipe = load_demo_pipeline(
        resolve_model(base), safe_encoder=str(tiny_model_dir("safe-sd")), device="cpu", dtype="float32"
    )
    assert pipe.has_original and pipe.safe_slots == ["text_encoder"] and pipe.safety_checker is None
    assert pipe.text_encoder.dtype == torch.float32
    assert pipe.unet is not None and pipe._progress_bar_config == {"disable": True}


def test_an_uncached_hub_model_is_named_with_the_reason_and_the_offline_alternative(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        ModelUnavailableError, match=r"base pipeline \(--model\) 'nobody/no-such-model': offline mode"
    ):
        resolve_model("nobody/no-such-model")
    tiny = resolve_model("tiny")
    # the encoder loader names it itself (offline alternative: a local folder); the demo passes that through
    with pytest.raises(ModelUnavailableError, match=r"safe text encoder.* 'nobody/no-encoder': offline mode"):
        load_demo_pipeline(tiny, safe_encoder="nobody/no-encoder", device="cpu")


def test_build_engine_from_command_line_arguments():
    from saferclip_diffusers.demo.engine import build_engine

    engine = build_engine("tiny", device="cpu", caption_pool_size=0, max_images=2, nudenet_threshold=0.5)
    assert engine.interpreter is None and engine.screen.threshold == 0.5
    assert (engine.limits.min_size, engine.limits.max_size, engine.limits.max_images) == (16, 64, 2)
    assert (engine.defaults.steps, engine.defaults.height, engine.defaults.guidance_scale) == (4, 32, 7.5)
    assert "random-weight" in engine.description and "safe-sd" in engine.description
