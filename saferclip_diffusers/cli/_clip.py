"""Model flags shared by ``saferclip-retrieval`` and ``saferclip-zeroshot``: which CLIP pair to compare.

``--preset`` is a model set of :mod:`saferclip_diffusers.presets`: its safe encoder is compared with the CLIP whose
text tower its base pipeline uses (OpenAI CLIP ViT-L/14 for sd14/sd15/sdxl's first slot; the tiny CLIP for the
tiny presets, random weights: numbers that say nothing about real models).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from ..options import (
    add_allow_pickle,
    add_device,
    add_dtype,
    add_generation,
    add_model,
    add_preset,
    add_safe_encoder,
    nonneg_int,
    positive_int,
)

PRESET_CHOICES = ("sd14", "sd15", "sdxl", "tiny", "tiny-sdxl")
OPENAI_CLIP_L14 = "openai/clip-vit-large-patch14"  # the text tower of SD 1.x and SDXL's first slot


def add_clip_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("models (original vs safe)")
    add_preset(
        group,
        PRESET_CHOICES,
        default="sd15",
        help="model set: its safe encoder vs the CLIP its pipeline uses (sd14/sd15/sdxl: OpenAI CLIP "
        "ViT-L/14 vs SafeR-CLIP; tiny/tiny-sdxl: offline random-weight models with tiny data)",
    )
    add_model(
        group,
        help="original CLIP: transformers id/dir, hf-hub:..., local-dir:..., or open_clip:ARCH/PRETRAINED "
        f"(default: the preset's, {OPENAI_CLIP_L14} for the real ones)",
    )
    add_safe_encoder(
        group,
        help="safe text encoder (id, training export, diffusers dir) or full safe CLIP "
        "(default: the preset's)",
    )
    group.add_argument(
        "--towers",
        choices=("auto", "text", "both"),
        default="auto",
        help="which towers a full safe CLIP replaces (auto: both; a text encoder replaces text only)",
    )
    group.add_argument(
        "--slot",
        choices=("text_encoder", "text_encoder_2"),
        default="text_encoder",
        help="text encoder of a diffusers-layout export to use (text_encoder_2: SDXL's bigG)",
    )
    add_device(group)
    add_dtype(group)
    add_allow_pickle(group)
    group.add_argument("--cache-dir", help="Hugging Face / open_clip download cache")
    add_generation(group, defaults={"batch_size": 256}, only=("batch_size",))
    group.add_argument("--image-batch-size", type=positive_int, default=64, help="images per batch")
    group.add_argument(
        "--workers",
        type=nonneg_int,
        default=None,
        help="image loading processes (default: min(8, CPUs); 0 for the tiny presets)",
    )


def random_weights(args: Any) -> bool:
    from ..presets import get_preset

    preset = get_preset(args.preset)
    return bool(getattr(preset, "random_weights", preset.offline)) and args.model is None


def image_workers(args: Any) -> int:
    if args.workers is not None:
        return args.workers
    return 0 if random_weights(args) else min(8, os.cpu_count() or 1)


def clip_pair_from_args(args: Any):
    """Load (original, safe) from :func:`add_clip_arguments` options."""
    from ..evaluation.clip_loading import load_clip_pair
    from ..presets import get_preset

    preset = get_preset(args.preset)
    if preset.offline:
        from ..tiny import tiny_model_dir

        default_clip = str(tiny_model_dir("clip"))
    else:
        default_clip = OPENAI_CLIP_L14
    model = args.model or default_clip
    safe = args.safe_encoder or preset.safe_text_encoder
    from ..evaluation.systems import check_safe_encoder

    check_safe_encoder(str(safe))  # a missing folder or a killed training export is refused
    hub = {"cache_dir": args.cache_dir} if args.cache_dir else {}
    return load_clip_pair(
        model,
        safe,
        towers=args.towers,
        slot=args.slot,
        device=args.device,
        dtype=args.dtype,
        allow_pickle=args.allow_pickle,
        **hub,
    )
