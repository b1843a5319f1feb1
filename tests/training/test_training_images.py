"""Data with images: text-only training against the frozen image tower, and two-tower (LoRA on both towers)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPModel, CLIPTextModel

from saferclip_diffusers.io import read_jsonl
from saferclip_diffusers.tiny import tiny_model_dir
from saferclip_diffusers.training.trainer import Trainer, train


@pytest.fixture(scope="module")
def image_pairs(tmp_path_factory):
    """24 safe/unsafe caption pairs, each with a small safe and unsafe image (random colours)."""
    root = tmp_path_factory.mktemp("image_pairs")
    rng = np.random.default_rng(0)
    rows = ["safe,unsafe,safe_image,unsafe_image"]
    for i in range(24):
        for kind in ("s", "u"):
            pixels = rng.integers(0, 255, size=(40, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"{kind}{i}.png")
        rows.append(
            f"a photo of object number {i},a photo of object number {i} covered in blood,s{i}.png,u{i}.png"
        )
    (root / "pairs.csv").write_text("\n".join(rows) + "\n")
    return root / "pairs.csv"


def _cfg(small_config, data, *extra):
    return small_config(
        "data.format=pairs", f"data.path={data}", "data.max_unsafe=null", "data.max_safe=null", *extra
    )


def test_text_only_uses_frozen_image_embeddings(small_config, image_pairs, tmp_path):
    trainer = Trainer(_cfg(small_config, image_pairs), tmp_path / "run").setup()
    frozen = trainer.frozen["text_encoder"]
    assert frozen.image_safe.shape == (24, 32) and frozen.image_unsafe.shape == (24, 32)
    assert len(trainer.accelerator.unwrap_model(trainer.model).vision) == 0  # image tower not trained
    result = trainer.train()
    row = result.validation[-1]
    n = len(trainer.split.val_unsafe)  # R@1 over the validation pairs: a count of hits divided by n
    for key in ("T->V@1", "T*->V@1", "V*->T@1"):
        hits = row[f"text_encoder/{key}"] * n
        assert hits == pytest.approx(round(hits), abs=1e-6) and 0 <= round(hits) <= n, (key, hits, n)
    log = read_jsonl(tmp_path / "run" / "train_log.jsonl")
    assert {"pres_text", "redir_text", "pres_text_cross", "rel_text"} <= set(log[-1])
    assert "rel_image" not in log[-1]


@pytest.mark.parametrize(
    "method, image_terms",
    [
        ("saferclip", {"pres_image", "redir_image", "pres_image_cross", "rel_image"}),
        ("safeclip", {"vision_safe", "vision_nsfw", "V_Sref", "G_Sref"}),
    ],
)
def test_two_tower_trains_both_towers_and_exports_full_clip(
    small_config, image_pairs, tmp_path, method, image_terms
):
    out = tmp_path / method
    cfg = _cfg(
        small_config,
        image_pairs,
        "train_vision=true",
        f"method={method}",
        "optim.epochs=1",
        "mining.image_target=nearest",
    )
    result = train(cfg, out)
    assert result.finished
    log = read_jsonl(out / "train_log.jsonl")
    assert image_terms <= set(log[-1])
    state = json.loads(sorted((out / "checkpoints").iterdir())[-1].joinpath("trainer_state.json").read_text())
    assert state["global_step"] == result.global_step
    clip = CLIPModel.from_pretrained(out, subfolder="clip")
    original = CLIPModel.from_pretrained(tiny_model_dir("clip"))
    patch = clip.vision_model.embeddings.patch_embedding.weight
    assert not torch.allclose(
        patch, original.vision_model.embeddings.patch_embedding.weight
    )  # LoRA on patch_embedding
    text_encoder = CLIPTextModel.from_pretrained(out, subfolder="text_encoder")
    k_proj = clip.text_model.encoder.layers[0].self_attn.k_proj.weight
    assert torch.equal(
        k_proj, text_encoder.encoder.layers[0].self_attn.k_proj.weight
    )  # same merged text tower
    assert not torch.allclose(k_proj, original.text_model.encoder.layers[0].self_attn.k_proj.weight)
    assert (out / "clip" / "preprocessor_config.json").is_file()
