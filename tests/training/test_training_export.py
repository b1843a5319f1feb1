"""The export: diffusers layout, loads with transformers and into SD / SDXL pipelines, and changes their output."""

import json

import numpy as np
import pytest
import torch
from transformers import CLIPTextModel, CLIPTextModelWithProjection

from saferclip_diffusers.tiny import tiny_model_dir
from saferclip_diffusers.training.trainer import train


@pytest.fixture(scope="module")
def sd_run(tmp_path_factory, small_overrides):
    from saferclip_diffusers.training.config import load_config

    out = tmp_path_factory.mktemp("export") / "run"
    result = train(load_config("tiny", small_overrides), out)
    return out, result


def _image(pipe, **kwargs):
    out = pipe(
        "a photo of a cat",
        num_inference_steps=2,
        height=32,
        width=32,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
        **kwargs,
    )
    return out.images[0]


def test_export_layout_and_transformers_loading(sd_run):
    out, result = sd_run
    assert result.finished
    assert (out / "text_encoder" / "model.safetensors").is_file()
    assert not list((out / "text_encoder").glob("*.bin"))
    te = CLIPTextModel.from_pretrained(out, subfolder="text_encoder")
    original = CLIPTextModel.from_pretrained(tiny_model_dir("sd"), subfolder="text_encoder")
    assert te.config.hidden_size == original.config.hidden_size
    diff = max(
        (a - b).abs().max().item()
        for a, b in zip(te.state_dict().values(), original.state_dict().values(), strict=True)
    )
    assert diff > 1e-5  # the LoRA deltas were merged into the exported weights

    prompts = json.loads((out / "training_prompts.json").read_text())
    assert set(prompts) == {"unsafe", "safe"} and prompts["safe"]
    # 24 selected - 4 validation = 20 training items; with the curriculum's 2 epochs the hard third is never used
    assert 10 <= len(prompts["unsafe"]) < 20
    import pandas as pd

    from saferclip_diffusers.data import I2P_CSV

    assert set(prompts["unsafe"]) <= set(pd.read_csv(I2P_CSV).prompt.str.strip())
    card = (out / "README.md").read_text()
    for needle in (
        "## Method",
        "## Training data",
        "## Validation",
        "## Licence",
        "random-weight",
        "redirect@1",
        "I2P benchmark prompts",
        "training_prompts.json",
    ):
        assert needle in card, needle
    rows = [json.loads(x) for x in (out / "validation.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2] and rows[0]["text_encoder/drift_safe"] < 1e-6


def test_export_loads_into_safer_pipeline_and_changes_output(sd_run):
    from diffusers import StableDiffusionPipeline

    from saferclip_diffusers import SaferStableDiffusionPipeline, read_training_prompts

    out, _ = sd_run
    base = StableDiffusionPipeline.from_pretrained(tiny_model_dir("sd"))
    base.set_progress_bar_config(disable=True)
    safe = SaferStableDiffusionPipeline.from_pretrained(tiny_model_dir("sd"), safe_text_encoder=out)
    safe.set_progress_bar_config(disable=True)
    exported = CLIPTextModel.from_pretrained(out, subfolder="text_encoder")
    assert torch.equal(
        safe.text_encoder.get_input_embeddings().weight, exported.get_input_embeddings().weight
    )
    a, b = _image(base), _image(safe)
    assert a.shape == b.shape == (32, 32, 3)
    assert np.abs(a - b).max() > 1e-4
    # plain diffusers takes the exported encoder too
    plain = StableDiffusionPipeline.from_pretrained(tiny_model_dir("sd"), text_encoder=exported)
    plain.set_progress_bar_config(disable=True)
    assert np.allclose(_image(plain), b, atol=1e-5)
    recorded = read_training_prompts(out)
    assert recorded == json.loads((out / "training_prompts.json").read_text())


def test_tiny_sdxl_trains_both_encoders_and_loads_into_sdxl(small_config, tmp_path):
    from diffusers import StableDiffusionXLPipeline

    from saferclip_diffusers import SaferStableDiffusionXLPipeline

    out = tmp_path / "sdxl"
    result = train(small_config("optim.epochs=1", base="tiny-sdxl"), out)
    assert result.finished
    row = result.validation[-1]
    assert "text_encoder/hidden_drift_safe" in row and "text_encoder_2/redirect@1" in row
    te = CLIPTextModel.from_pretrained(out, subfolder="text_encoder")
    assert te.config.hidden_size == 32
    te2 = CLIPTextModelWithProjection.from_pretrained(out, subfolder="text_encoder_2")
    assert te2.config.hidden_size == 48 and te2.config.projection_dim == 48
    base = StableDiffusionXLPipeline.from_pretrained(tiny_model_dir("sdxl"))
    base.set_progress_bar_config(disable=True)
    safe = SaferStableDiffusionXLPipeline.from_pretrained(tiny_model_dir("sdxl"), safe_text_encoder=out)
    safe.set_progress_bar_config(disable=True)
    assert safe.safe_slots == ["text_encoder", "text_encoder_2"]
    assert torch.equal(safe.text_encoder_2.text_projection.weight, te2.text_projection.weight)
    assert torch.equal(safe.text_encoder.get_input_embeddings().weight, te.get_input_embeddings().weight)
    assert np.abs(_image(base) - _image(safe)).max() > 1e-4


def _cli():
    import runpy
    from pathlib import Path

    return runpy.run_path(
        str(Path(__file__).resolve().parents[2] / "train" / "train.py"), run_name="train_cli"
    )["main"]


def test_cli_print_config_and_export_only(sd_run, capsys, small_overrides):
    main = _cli()
    assert main(["--config", "tiny", "--out", "unused", "--print-config", "optim.lr=5e-4"]) == 0
    assert "lr: 0.0005" in capsys.readouterr().out
    out, _ = sd_run
    (out / "README.md").unlink()
    (out / "text_encoder" / "model.safetensors").unlink()
    assert main(["--config", "tiny", "--out", str(out), "--export-only", *small_overrides]) == 0
    assert (out / "README.md").is_file()
    assert CLIPTextModel.from_pretrained(out, subfolder="text_encoder").config.hidden_size == 32
