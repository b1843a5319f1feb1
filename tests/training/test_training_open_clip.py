"""open_clip models load through open_clip_torch, convert to transformers CLIP exactly, train and export."""

import json

import open_clip  # conftest imported saferclip_diffusers first (torchvision workaround)
import pytest
import torch
from transformers import CLIPTextModel, CLIPTokenizer

from saferclip_diffusers.training.open_clip_convert import load_open_clip
from saferclip_diffusers.training.trainer import train

TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="module")
def open_clip_dir(tmp_path_factory):
    """A tiny random open_clip model saved as a ``local-dir:`` folder (config + safetensors)."""
    from open_clip.model import CLIP
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("open_clip_tiny")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CFG, "preprocess_cfg": {}}))
    torch.manual_seed(0)
    model = CLIP(**TINY_CFG)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(folder / "open_clip_model.safetensors"),
    )
    return folder


def test_conversion_is_exact(open_clip_dir):
    name = f"local-dir:{open_clip_dir}"
    ref, _, _ = open_clip.create_model_and_transforms(name)
    ref.eval()
    hf, tokenizer, processor = load_open_clip(name)
    texts = ["a photo of a cat", "a dog riding a skateboard down the street at night"]
    oc_ids = open_clip.get_tokenizer(name)(texts)
    hf_ids = tokenizer(texts, padding="max_length", max_length=77, return_tensors="pt").input_ids
    assert torch.equal(oc_ids, hf_ids)  # same ids, same padding (open_clip pads with 0)
    pixels = torch.randn(2, 3, 32, 32)
    with (
        torch.no_grad()
    ):  # transformers 5: get_*_features return outputs whose pooler_output is the projection
        text = hf.get_text_features(input_ids=hf_ids).pooler_output
        image = hf.get_image_features(pixel_values=pixels).pooler_output
        assert torch.allclose(ref.encode_text(oc_ids), text, atol=1e-5)
        assert torch.allclose(ref.encode_image(pixels), image, atol=1e-5)
    assert processor.crop_size["height"] == 32


def test_open_clip_backbone_trains_and_exports(open_clip_dir, small_config, tmp_path):
    cfg = small_config(
        "encoders.0.backbone=open_clip",
        f"encoders.0.model=local-dir:{open_clip_dir}",
        "encoders.0.hidden_layer=null",
        "encoders.0.hidden_weight=0",
        "optim.epochs=1",
    )
    out = tmp_path / "run"
    assert train(cfg, out).finished
    te = CLIPTextModel.from_pretrained(out, subfolder="text_encoder")
    assert te.config.hidden_size == 32 and te.config.vocab_size == 49408
    tokenizer = CLIPTokenizer.from_pretrained(out, subfolder="tokenizer")
    assert len(tokenizer) == 49408 and tokenizer("a cat").input_ids[0] == 49406
