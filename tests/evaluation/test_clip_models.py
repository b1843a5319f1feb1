"""Loading any CLIP (transformers / open_clip), original vs safe, and the uniform encode interface."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import CLIPModel, CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from saferclip_diffusers.encoders import PickleCheckpointError
from saferclip_diffusers.evaluation.clip_loading import (
    is_open_clip_spec,
    load_clip,
    load_clip_pair,
    load_safe_clip,
)
from saferclip_diffusers.evaluation.clip_models import cached_embeddings
from saferclip_diffusers.tiny import build_tiny_clip, tiny_model_dir

TEXTS = ["a cat on a sofa", "a rocket on the launch pad", "a cup of coffee"]


@pytest.fixture(scope="module")
def clip_dir():
    return tiny_model_dir("clip")


@pytest.fixture(scope="module")
def photos():
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
    return [Image.new("RGB", (40, 48), c) for c in colours]


@pytest.fixture(scope="module")
def original(clip_dir):
    return load_clip(clip_dir, device="cpu")


def _reference_text(model: CLIPModel, tokenizer, texts, text_model=None):
    inputs = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        pooled = (text_model or model.text_model)(**inputs).pooler_output
        return F.normalize(model.text_projection(pooled), dim=-1)


def test_hf_clip_embeddings_match_transformers(clip_dir, original, photos):
    model = CLIPModel.from_pretrained(clip_dir).eval()
    tokenizer = CLIPTokenizer.from_pretrained(clip_dir)
    text = original.encode_text(TEXTS, batch_size=2)
    assert text.dtype == torch.float32 and text.shape == (3, 32)
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(text, _reference_text(model, tokenizer, TEXTS), atol=1e-5, rtol=1e-4)
    from transformers import CLIPImageProcessor

    pixels = CLIPImageProcessor.from_pretrained(clip_dir)(images=photos, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = F.normalize(
            model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output), dim=-1
        )
    torch.testing.assert_close(original.encode_image(photos, batch_size=2), expected, atol=1e-5, rtol=1e-4)


def test_image_paths_and_unreadable_file(original, photos, tmp_path):
    path = tmp_path / "a.png"
    photos[0].save(path)
    torch.testing.assert_close(
        original.encode_image([path]), original.encode_image([photos[0]]), atol=1e-5, rtol=1e-4
    )
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.jpg"):
        original.encode_image([path, broken])


def test_safe_text_encoder_replaces_only_the_text_tower(clip_dir, original, photos):
    safe_dir = tiny_model_dir("safe-sd")
    safe = load_safe_clip(original, safe_dir)
    assert safe.shares_image_tower(original)
    torch.testing.assert_close(safe.encode_image(photos), original.encode_image(photos))
    # the safe tower is the perturbed CLIPTextModel, projected with the ORIGINAL CLIP's text projection
    model = CLIPModel.from_pretrained(clip_dir).eval()
    safe_te = CLIPTextModel.from_pretrained(safe_dir, subfolder="text_encoder").eval()
    expected = _reference_text(model, CLIPTokenizer.from_pretrained(clip_dir), TEXTS, text_model=safe_te)
    got = safe.encode_text(TEXTS)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(got, original.encode_text(TEXTS), atol=1e-3)
    with pytest.raises(ValueError, match="text encoder only"):
        load_safe_clip(original, safe_dir, towers="both")


def test_full_safe_clip_towers(tmp_path, original, photos):
    other = build_tiny_clip(tmp_path / "full-safe", seed=7)
    both = load_safe_clip(original, other)  # auto: a full CLIP replaces both towers
    assert not both.shares_image_tower(original)
    assert not torch.allclose(both.encode_image(photos), original.encode_image(photos), atol=1e-3)
    text_only = load_safe_clip(original, other, towers="text")
    assert text_only.shares_image_tower(original)
    torch.testing.assert_close(text_only.encode_image(photos), original.encode_image(photos))
    torch.testing.assert_close(text_only.encode_text(TEXTS), both.encode_text(TEXTS))


def test_a_full_clip_as_the_safe_side_embeds_as_transformers_does(clip_dir, photos):
    """The safe side of a pair is loaded by its own path (a full CLIP beside an original): it must embed as
    transformers' CLIPModel does, not merely as the original side does."""
    from transformers import CLIPImageProcessor

    _, safe = load_clip_pair(clip_dir, clip_dir, device="cpu")
    model = CLIPModel.from_pretrained(clip_dir).eval()
    reference = _reference_text(model, CLIPTokenizer.from_pretrained(clip_dir), TEXTS)
    torch.testing.assert_close(safe.encode_text(TEXTS), reference, atol=1e-5, rtol=1e-4)
    pixels = CLIPImageProcessor.from_pretrained(clip_dir)(images=photos, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        image = F.normalize(
            model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output), dim=-1
        )
    torch.testing.assert_close(safe.encode_image(photos), image, atol=1e-5, rtol=1e-4)


def test_mismatched_safe_text_encoder_is_refused(tmp_path, original):
    wide = CLIPTextModel.from_pretrained(tiny_model_dir("clip-g"))  # 48 wide, the tiny CLIP's text is 32
    wide.save_pretrained(tmp_path / "wide")
    with pytest.raises(ValueError, match="48 wide"):
        load_safe_clip(original, tmp_path / "wide")


def test_pickle_checkpoints_refused_unless_allowed(clip_dir, tmp_path):
    model = CLIPModel.from_pretrained(clip_dir)
    legacy = tmp_path / "legacy"
    model.config.save_pretrained(legacy)
    torch.save(model.state_dict(), legacy / "pytorch_model.bin")
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "processor_config.json"):
        (legacy / name).write_bytes((clip_dir / name).read_bytes())
    with pytest.raises(PickleCheckpointError, match="allow_pickle"):
        load_clip(legacy)
    assert load_clip(legacy, allow_pickle=True).encode_text(TEXTS).shape == (3, 32)


def test_not_a_clip_directory(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "clip_text_model"}))
    with pytest.raises(ValueError, match="not a full CLIP"):
        load_clip(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_clip(tmp_path / "typo")


# ----------------------------------------------------------------------------------------------- open_clip

OC_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="module")
def open_clip_dir(tmp_path_factory):
    import open_clip
    from safetensors.torch import save_file

    directory = tmp_path_factory.mktemp("open_clip_tiny")
    torch.manual_seed(3)
    model = open_clip.CLIP(**OC_CFG)
    preprocess = {
        "size": 32,
        "mean": [0.48145466, 0.4578275, 0.40821073],
        "std": [0.26862954, 0.26130258, 0.27577711],
    }
    (directory / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": OC_CFG, "preprocess_cfg": preprocess})
    )
    save_file(model.state_dict(), directory / "open_clip_model.safetensors")
    return directory


def test_open_clip_local_dir(open_clip_dir, photos):
    import open_clip

    assert is_open_clip_spec(open_clip_dir) and is_open_clip_spec(f"local-dir:{open_clip_dir}")
    encoder = load_clip(f"local-dir:{open_clip_dir}", device="cpu")
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{open_clip_dir}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{open_clip_dir}")
    model.eval()
    with torch.no_grad():
        text = F.normalize(model.encode_text(tokenizer(TEXTS)), dim=-1)
        image = F.normalize(model.encode_image(torch.stack([preprocess(p) for p in photos])), dim=-1)
    torch.testing.assert_close(encoder.encode_text(TEXTS), text, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(encoder.encode_image(photos), image, atol=1e-5, rtol=1e-4)


def test_open_clip_with_safe_transformers_text_encoder(open_clip_dir, photos, tmp_path):
    import open_clip

    original = load_clip(open_clip_dir, device="cpu")  # a bare directory with open_clip_config.json
    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=77,
        bos_token_id=49406,
        eos_token_id=49407,
    )
    torch.manual_seed(5)
    CLIPTextModel(config).save_pretrained(tmp_path / "safe-te")
    safe = load_safe_clip(original, tmp_path / "safe-te")
    assert safe.shares_image_tower(original)
    # expected: the transformers tower reads open_clip's tokens, pooled at end-of-text, times open_clip's projection
    safe_te = CLIPTextModel.from_pretrained(tmp_path / "safe-te").eval()
    tokens = open_clip.get_tokenizer(f"local-dir:{open_clip_dir}")(TEXTS)
    with torch.no_grad():
        pooled = safe_te(input_ids=tokens).pooler_output
        expected = F.normalize(pooled @ original.open_clip_model.text_projection, dim=-1)
    torch.testing.assert_close(safe.encode_text(TEXTS), expected, atol=1e-5, rtol=1e-4)


def test_open_clip_pickle_and_missing_tag(open_clip_dir, tmp_path):
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "open_clip_config.json").write_bytes((open_clip_dir / "open_clip_config.json").read_bytes())
    from safetensors.torch import load_file

    torch.save(
        load_file(open_clip_dir / "open_clip_model.safetensors"), legacy / "open_clip_pytorch_model.bin"
    )
    with pytest.raises(PickleCheckpointError):
        load_clip(f"local-dir:{legacy}")
    assert load_clip(f"local-dir:{legacy}", allow_pickle=True).dim == 32
    with pytest.raises(ValueError, match="no pretrained weights"):
        load_clip("open_clip:ViT-B-32")


def test_cached_embeddings_reuse_and_invalidate(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return torch.arange(6.0).view(2, 3)

    path = tmp_path / "emb.safetensors"
    first = cached_embeddings(path, {"model": "a", "items": ["x", "y"]}, compute)
    again = cached_embeddings(path, {"model": "a", "items": ["x", "y"]}, compute)
    assert len(calls) == 1 and torch.equal(first, again)
    cached_embeddings(path, {"model": "b", "items": ["x", "y"]}, compute)  # another model: recomputed
    assert len(calls) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.safetensors"]  # no temp files left


def test_a_corrupt_embedding_cache_is_recomputed_with_a_warning(tmp_path, caplog):
    import logging

    calls = []

    def compute():
        calls.append(1)
        return torch.arange(6.0).view(2, 3)

    path = tmp_path / "emb.safetensors"
    cached_embeddings(path, {"model": "a"}, compute)
    path.write_bytes(path.read_bytes()[:20])  # a damaged file (e.g. a full disk or a copy cut short)
    with caplog.at_level(logging.WARNING):
        again = cached_embeddings(path, {"model": "a"}, compute)
    assert len(calls) == 2 and torch.equal(again, torch.arange(6.0).view(2, 3))
    assert "unreadable" in caplog.text and str(path) in caplog.text
    assert cached_embeddings(path, {"model": "a"}, compute) is not None and len(calls) == 2  # rewritten whole
