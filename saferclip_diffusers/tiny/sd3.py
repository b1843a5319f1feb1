"""A tiny Stable Diffusion 3 pipeline (MMDiT transformer, CLIP-L + CLIP-G with projection, T5) and safe stand-ins.

``text_encoder_2`` is the same tiny "bigG" as the tiny SDXL's second encoder, so an SDXL export's bigG can be
checked against SD3's CLIP-G slot, as with the real models.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ._rng import rng_neutral, seeded
from .clip import perturbed_text_encoder
from .sd import tiny_vae
from .t5 import T5_WIDTH


def _tiny_sd3_transformer(pooled_dim: int):
    from diffusers import SD3Transformer2DModel

    return SD3Transformer2DModel(
        sample_size=16,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=T5_WIDTH,
        caption_projection_dim=32,
        pooled_projection_dim=pooled_dim,
        pos_embed_max_size=16,
    )


@rng_neutral
def build_tiny_sd3(directory: str | os.PathLike, seed: int, source: Callable[[str], Path]) -> Path:
    """A tiny SD3 pipeline directory built from the cached tiny CLIP, CLIP-G and T5."""
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

    directory = Path(directory)
    clip_dir, clip_g_dir, t5_dir = (source(kind) for kind in ("clip", "clip-g", "t5"))
    text_encoder = CLIPTextModelWithProjection.from_pretrained(clip_dir, use_safetensors=True)
    text_encoder_2 = CLIPTextModelWithProjection.from_pretrained(clip_g_dir, use_safetensors=True)
    pooled = text_encoder.config.projection_dim + text_encoder_2.config.projection_dim
    with seeded(seed + 1):
        transformer = _tiny_sd3_transformer(pooled)
    with seeded(seed + 2):
        vae = tiny_vae(latent_channels=16, shift_factor=0.0609, scaling_factor=1.5305)  # SD3's VAE constants
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=CLIPTokenizer.from_pretrained(clip_dir),
        text_encoder_2=text_encoder_2,
        tokenizer_2=CLIPTokenizer.from_pretrained(clip_g_dir, pad_token="!"),  # as SD3's second tokenizer
        text_encoder_3=T5EncoderModel.from_pretrained(t5_dir, use_safetensors=True),
        tokenizer_3=T5TokenizerFast.from_pretrained(t5_dir),
    )
    pipe.save_pretrained(directory, safe_serialization=True)
    return directory


@rng_neutral
def build_tiny_safe_sd3(directory: str | os.PathLike, seed: int, source: Callable[[str], Path]) -> Path:
    """``text_encoder/``, ``text_encoder_2/`` and ``text_encoder_3/`` (T5) of perturbed tiny SD3 encoders.

    The CLIP-G stand-in uses the same perturbation as the tiny safe SDXL export's ``text_encoder_2``.
    """
    from transformers import CLIPTextModelWithProjection, T5EncoderModel

    directory = Path(directory)
    encoders = {
        "text_encoder": (CLIPTextModelWithProjection, "clip", 100),
        "text_encoder_2": (CLIPTextModelWithProjection, "clip-g", 200),
        "text_encoder_3": (T5EncoderModel, "t5", 300),
    }
    for slot, (model_class, kind, offset) in encoders.items():
        original = model_class.from_pretrained(source(kind), use_safetensors=True)
        perturbed_text_encoder(original, seed=seed + offset).save_pretrained(
            directory / slot, safe_serialization=True
        )
    return directory
