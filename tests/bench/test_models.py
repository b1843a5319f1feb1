"""Real-size architectures: the configs give the public models' parameter counts; fast init gives real values."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from bench import models as m


def _count(build) -> int:
    return sum(p.numel() for p in m._empty(build).parameters())  # meta device: no memory, no time


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda: UNet2DConditionModel(**m.SD15_UNET), 859_520_964),  # SD 1.5 UNet
        (lambda: UNet2DConditionModel(**m.SDXL_UNET), 2_567_463_684),  # SDXL base UNet
        (lambda: AutoencoderKL(**m.VAE), 83_653_863),  # SD / SDXL VAE
        (lambda: CLIPTextModel(CLIPTextConfig(**m.CLIP_L_TEXT)), 123_060_480),  # CLIP ViT-L/14 text
        (
            lambda: CLIPTextModelWithProjection(CLIPTextConfig(**m.CLIP_BIGG_TEXT)),
            694_659_840,
        ),  # OpenCLIP bigG text
    ],
    ids=["sd15-unet", "sdxl-unet", "vae", "clip-l-text", "bigg-text"],
)
def test_configs_match_the_public_parameter_counts(build, expected):
    assert _count(build) == expected


def test_sdxl_unet_conditioning_dims_add_up():
    # 2048 = 768 (CLIP-L) + 1280 (bigG); pooled 1280 + 6 time ids x 256 = 2816
    assert (
        m.SDXL_UNET["cross_attention_dim"] == m.CLIP_L_TEXT["hidden_size"] + m.CLIP_BIGG_TEXT["hidden_size"]
    )
    assert m.SDXL_UNET["projection_class_embeddings_input_dim"] == (
        m.CLIP_BIGG_TEXT["projection_dim"] + 6 * m.SDXL_UNET["addition_time_embed_dim"]
    )


def test_fast_random_init_gives_real_seeded_values_at_default_scale():
    class Small(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(50, 16)
            self.lin = torch.nn.Linear(16, 64)
            self.norm = torch.nn.LayerNorm(64)
            self.conv = torch.nn.Conv2d(4, 8, 3)
            self.register_buffer("ids", torch.arange(5))

    a = m.fast_random_init(m._empty(Small), seed=0)
    b = m.fast_random_init(m._empty(Small), seed=0)
    c = m.fast_random_init(m._empty(Small), seed=1)
    for p in a.parameters():
        assert not p.is_meta and torch.isfinite(p).all()
    assert torch.equal(a.lin.weight, b.lin.weight) and not torch.equal(a.lin.weight, c.lin.weight)
    assert a.lin.weight.abs().max() <= 1 / 16**0.5 and a.lin.weight.std() > 0.5 / (3 * 16) ** 0.5
    assert a.conv.weight.abs().max() <= 1 / (4 * 9) ** 0.5
    assert torch.equal(a.norm.weight, torch.ones(64)) and torch.equal(a.norm.bias, torch.zeros(64))
    assert torch.equal(a.lin.bias, torch.zeros(64))
    assert a.emb.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert torch.equal(a.ids, torch.arange(5))  # buffers are built for real, untouched
    assert not a.training


def test_full_clip_tokenizer_has_the_real_vocabulary(tmp_path):
    from saferclip_diffusers.tiny import save_clip_tokenizer

    tok = save_clip_tokenizer(tmp_path, num_merges=m.FULL_CLIP_MERGES)
    assert len(tok) == m.CLIP_L_TEXT["vocab_size"] == 49408
    assert tok.eos_token_id == 49407


def test_cache_root_and_unknown_kind(tmp_path, monkeypatch):
    monkeypatch.setenv("SAFERCLIP_BENCH_CACHE", str(tmp_path))
    assert m.bench_cache_root() == tmp_path
    with pytest.raises(ValueError, match="unknown real-size model"):
        m.real_size_dir("sd3")
