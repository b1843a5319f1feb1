"""Tiny CLIP models: configs, the ``CLIPModel`` builder and the "perturbed" stand-in for a safe encoder."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch

from ._rng import rng_neutral, seeded
from .tokenizers import save_clip_tokenizer

TEXT_WIDTH = 32  # tiny "ViT-L/14" text tower (SD 1.x, SDXL/SD3 slot 1, FLUX's CLIP)
TEXT_WIDTH_G = 48  # tiny "bigG" text tower (SDXL and SD3 slot 2)
PROJECTION_DIM = 32
PROJECTION_DIM_G = 48
IMAGE_SIZE = 32


def tiny_text_config(tokenizer, hidden_size: int = TEXT_WIDTH, projection_dim: int = PROJECTION_DIM):
    """A 2-layer CLIP text config whose vocabulary and special ids are ``tokenizer``'s."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=77,
        projection_dim=projection_dim,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,  # CLIP pools at the first eos: it must be the tokenizer's
        pad_token_id=tokenizer.pad_token_id,
    )


def tiny_vision_config(projection_dim: int = PROJECTION_DIM):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        image_size=IMAGE_SIZE,
        patch_size=8,
        projection_dim=projection_dim,
    )


@rng_neutral
def build_tiny_clip(
    directory: str | os.PathLike,
    seed: int = 0,
    text_width: int = TEXT_WIDTH,
    projection_dim: int = PROJECTION_DIM,
) -> Path:
    """A tiny ``CLIPModel`` directory with tokenizer and image processor (``CLIPProcessor``)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    directory = Path(directory)
    tokenizer = save_clip_tokenizer(directory)
    config = CLIPConfig(
        text_config=tiny_text_config(tokenizer, text_width, projection_dim).to_dict(),
        vision_config=tiny_vision_config(projection_dim).to_dict(),
        projection_dim=projection_dim,
    )
    with seeded(seed):
        model = CLIPModel(config).eval()
    model.save_pretrained(directory, safe_serialization=True)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)
    return directory


def perturbed_text_encoder(source: torch.nn.Module, seed: int = 1, scale: float = 0.5) -> torch.nn.Module:
    """A copy of ``source`` (a CLIP or T5 text model) with seeded Gaussian noise added to every weight.

    Stands in for a "safe" encoder in offline runs before any training: same architecture and tokenizer,
    different conditioning. Random weights, not a safety model. Uses its own generator (the caller's is untouched).
    """
    model = copy.deepcopy(source)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(
                torch.randn(p.shape, generator=gen, dtype=p.dtype)
                * scale
                * (p.std() if p.numel() > 1 else 1.0)
            )
    return model
