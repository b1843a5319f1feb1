"""A tiny FLUX.1 pipeline (CLIP-L pooled + T5 sequence, guidance-distilled transformer) and safe stand-ins."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ._rng import rng_neutral, seeded
from .clip import TEXT_WIDTH, perturbed_text_encoder
from .sd import tiny_vae
from .t5 import T5_WIDTH


def _tiny_flux_transformer():
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,  # 16 latent channels packed 2x2
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=T5_WIDTH,
        pooled_projection_dim=TEXT_WIDTH,  # CLIP-L pooler_output, unprojected
        guidance_embeds=True,  # FLUX.1-dev style distilled guidance
        axes_dims_rope=(4, 6, 6),
    )


@rng_neutral
def build_tiny_flux(directory: str | os.PathLike, seed: int, source: Callable[[str], Path]) -> Path:
    """A tiny FLUX.1 pipeline directory: ``text_encoder`` is tiny-clip's text tower, ``text_encoder_2`` tiny T5."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline
    from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

    directory = Path(directory)
    clip_dir, t5_dir = source("clip"), source("t5")
    with seeded(seed + 1):
        transformer = _tiny_flux_transformer()
    with seeded(seed + 2):
        vae = tiny_vae(
            latent_channels=16, shift_factor=0.1159, scaling_factor=0.3611
        )  # FLUX.1's VAE constants
    scheduler = FlowMatchEulerDiscreteScheduler(  # FLUX.1-dev's schedule
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    pipe = FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=CLIPTextModel.from_pretrained(clip_dir, use_safetensors=True),
        tokenizer=CLIPTokenizer.from_pretrained(clip_dir),
        text_encoder_2=T5EncoderModel.from_pretrained(t5_dir, use_safetensors=True),
        tokenizer_2=T5TokenizerFast.from_pretrained(t5_dir),
        transformer=transformer,
    )
    pipe.save_pretrained(directory, safe_serialization=True)
    return directory


@rng_neutral
def build_tiny_safe_flux(directory: str | os.PathLike, seed: int, source: Callable[[str], Path]) -> Path:
    """FLUX layout: ``text_encoder/`` (perturbed CLIP-L, as the tiny safe SD's) and ``text_encoder_2/`` (perturbed T5)."""
    from transformers import CLIPTextModel, T5EncoderModel

    directory = Path(directory)
    clip = CLIPTextModel.from_pretrained(source("clip"), use_safetensors=True)
    perturbed_text_encoder(clip, seed=seed + 100).save_pretrained(
        directory / "text_encoder", safe_serialization=True
    )
    t5 = T5EncoderModel.from_pretrained(source("t5"), use_safetensors=True)
    perturbed_text_encoder(t5, seed=seed + 300).save_pretrained(
        directory / "text_encoder_2", safe_serialization=True
    )
    return directory
