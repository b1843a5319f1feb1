"""Tiny SD 1.x and SDXL pipelines (UNet-based) and their "safe" stand-in encoders."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ._rng import rng_neutral, seeded
from .clip import PROJECTION_DIM_G, perturbed_text_encoder


def _tiny_unet(cross_attention_dim: int, sdxl: bool):
    from diffusers import UNet2DConditionModel

    kwargs = dict(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(16, 32),
        norm_num_groups=8,
        attention_head_dim=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim,
    )
    if sdxl:
        kwargs.update(
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=6 * 8 + PROJECTION_DIM_G,
            use_linear_projection=True,
            transformer_layers_per_block=1,
        )
    return UNet2DConditionModel(**kwargs)


def tiny_vae(latent_channels: int = 4, **extra):
    """A 2-level ``AutoencoderKL`` (scale factor 2); SD3 and FLUX use 16 latent channels and a shift factor."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(16, 32),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=latent_channels,
        norm_num_groups=8,
        layers_per_block=1,
        sample_size=32,
        **extra,
    )


def _scheduler():
    from diffusers import EulerDiscreteScheduler

    # SD's training schedule; Euler (deterministic) as in SDXL's default
    return EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
    )


@rng_neutral
def build_tiny_sd(directory: str | os.PathLike, seed: int, source: Callable[[str], Path]) -> Path:
    """A tiny SD 1.x pipeline directory whose ``text_encoder`` is the text tower of ``source("clip")``."""
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTextModel, CLIPTokenizer

    directory = Path(directory)
    clip_dir = source("clip")
    text_encoder = CLIPTextModel.from_pretrained(clip_dir, use_safetensors=True)
    tokenizer = CLIPTokenizer.from_pretrained(clip_dir)
    with seeded(seed + 1):
        unet = _tiny_unet(cross_attention_dim=text_encoder.config.hidden_size, sdxl=False)
    with seeded(seed + 2):
        vae = tiny_vae()
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(directory, safe_serialization=True)
    return directory


@rng_neutral
def build_tiny_sdxl(directory: str | os.PathLike, seed: int, source: Callable[[str], Path]) -> Path:
    """A tiny SDXL pipeline directory: ``text_encoder`` from tiny-clip, ``text_encoder_2`` from tiny-clip-g."""
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    directory = Path(directory)
    clip_dir, clip_g_dir = source("clip"), source("clip-g")
    text_encoder = CLIPTextModel.from_pretrained(clip_dir, use_safetensors=True)
    text_encoder_2 = CLIPTextModelWithProjection.from_pretrained(clip_g_dir, use_safetensors=True)
    tokenizer = CLIPTokenizer.from_pretrained(clip_dir)
    tokenizer_2 = CLIPTokenizer.from_pretrained(clip_g_dir, pad_token="!")  # as SDXL's second tokenizer
    with seeded(seed + 1):
        cross = text_encoder.config.hidden_size + text_encoder_2.config.hidden_size
        unet = _tiny_unet(cross_attention_dim=cross, sdxl=True)
    with seeded(seed + 2):
        vae = tiny_vae()
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=_scheduler(),
    )
    pipe.save_pretrained(directory, safe_serialization=True)
    return directory


@rng_neutral
def build_tiny_safe_encoder(
    directory: str | os.PathLike, seed: int, source: Callable[[str], Path], sdxl: bool = False
) -> Path:
    """A diffusers-style directory (``text_encoder/`` [+ ``text_encoder_2/``]) of perturbed tiny encoders."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    directory = Path(directory)
    te = CLIPTextModel.from_pretrained(source("clip"), use_safetensors=True)
    perturbed_text_encoder(te, seed=seed + 100).save_pretrained(
        directory / "text_encoder", safe_serialization=True
    )
    if sdxl:
        te2 = CLIPTextModelWithProjection.from_pretrained(source("clip-g"), use_safetensors=True)
        perturbed_text_encoder(te2, seed=seed + 200).save_pretrained(
            directory / "text_encoder_2", safe_serialization=True
        )
    return directory
