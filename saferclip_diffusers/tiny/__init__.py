"""Tiny random-weight SD 1.x, SDXL, SD3, FLUX.1, CLIP and T5 models, built offline and deterministically from a seed.

Everything is written as ordinary diffusers / transformers directories, so tests and the ``tiny*`` presets of
every command go through the real ``from_pretrained`` paths. Nothing is downloaded and no model file is committed:
the CLIP tokenizer is CLIP's real BPE truncated to its first ``TINY_MERGES`` merges (bundled, see
``data/clip_bpe/SOURCE.md``); the T5 tokenizer is a small Unigram model built from the same pieces.

Coherence of the tiny chain (train -> swap -> generate -> evaluate):

- ``clip`` is a full ``CLIPModel`` (text + vision). The tiny SD pipeline's ``text_encoder`` *is* its text tower,
  as SD 1.x's encoder is CLIP ViT-L/14's; SDXL, SD3 and FLUX take their CLIP-L from it too.
- ``clip-g`` plays OpenCLIP bigG: a wider text tower (48 vs 32) with projection, SDXL's and SD3's
  ``text_encoder_2``. ``t5`` plays T5-XXL (d_model 96), SD3's ``text_encoder_3`` and FLUX's ``text_encoder_2``.
- ``safe-*`` kinds are diffusers-layout folders of perturbed copies of those encoders (stand-ins, not safety models).

Building is RNG-neutral: it never reads or advances the caller's torch generator (issue 14 §2).
These weights are random: any number measured with them says nothing about real models.
"""

from .cache import TINY_KINDS, TINY_VERSION, tiny_cache_root, tiny_model_dir
from .clip import (
    IMAGE_SIZE,
    PROJECTION_DIM,
    PROJECTION_DIM_G,
    TEXT_WIDTH,
    TEXT_WIDTH_G,
    build_tiny_clip,
    perturbed_text_encoder,
    tiny_text_config,
    tiny_vision_config,
)
from .flux import build_tiny_flux, build_tiny_safe_flux
from .sd import build_tiny_safe_encoder, build_tiny_sd, build_tiny_sdxl
from .sd3 import build_tiny_safe_sd3, build_tiny_sd3
from .t5 import T5_WIDTH, build_tiny_t5
from .tokenizers import TINY_MERGES, clip_bpe_vocab, save_clip_tokenizer, save_t5_tokenizer

__all__ = [
    "IMAGE_SIZE",
    "PROJECTION_DIM",
    "PROJECTION_DIM_G",
    "T5_WIDTH",
    "TEXT_WIDTH",
    "TEXT_WIDTH_G",
    "TINY_KINDS",
    "TINY_MERGES",
    "TINY_VERSION",
    "build_tiny_clip",
    "build_tiny_flux",
    "build_tiny_safe_encoder",
    "build_tiny_safe_flux",
    "build_tiny_safe_sd3",
    "build_tiny_sd",
    "build_tiny_sd3",
    "build_tiny_sdxl",
    "build_tiny_t5",
    "clip_bpe_vocab",
    "perturbed_text_encoder",
    "save_clip_tokenizer",
    "save_t5_tokenizer",
    "tiny_cache_root",
    "tiny_model_dir",
    "tiny_text_config",
    "tiny_vision_config",
]
