"""Command-line options shared by ``eval/retrieval.py`` and ``eval/zeroshot.py``: which CLIP pair to compare."""

from __future__ import annotations

import os
from typing import Any

from .clip_models import DEFAULT_CLIP, TOWERS, ClipEncoder, load_clip_pair

CLIP_PRESETS = ("vit-l-14", "tiny")


def add_clip_arguments(parser: Any) -> None:
    """The model options shared by ``eval/retrieval.py`` and ``eval/zeroshot.py``."""
    group = parser.add_argument_group("models (original vs safe)")
    group.add_argument("--preset", choices=CLIP_PRESETS, default="vit-l-14",
                       help="vit-l-14: OpenAI CLIP ViT-L/14 vs SafeR-CLIP (Adeely93/SafeR_CLIP); tiny: offline "
                            "random-weight CLIP vs a perturbed text encoder, with tiny data (numbers mean nothing)")
    group.add_argument("--model", help=f"original CLIP: transformers id/dir, hf-hub:..., local-dir:..., or "
                                       f"open_clip:ARCH/PRETRAINED (default: {DEFAULT_CLIP})")
    group.add_argument("--safe", help="safe text encoder (id, training export, diffusers dir) or full safe CLIP "
                                      "(default: Adeely93/SafeR_CLIP)")
    group.add_argument("--towers", choices=TOWERS, default="auto",
                       help="which towers a full safe CLIP replaces (auto: both; a text encoder replaces text only)")
    group.add_argument("--slot", choices=("text_encoder", "text_encoder_2"), default="text_encoder",
                       help="text encoder of a diffusers-layout export to use (text_encoder_2: SDXL's bigG)")
    group.add_argument("--device", default="auto")
    group.add_argument("--dtype", default="auto", help="auto (float16 on CUDA, else float32), float32, float16, bfloat16")
    group.add_argument("--allow-pickle", action="store_true", help="allow pickle checkpoints (can run code)")
    group.add_argument("--cache-dir", help="Hugging Face / open_clip download cache")
    group.add_argument("--batch-size", type=int, default=256, help="texts per batch")
    group.add_argument("--image-batch-size", type=int, default=64)
    group.add_argument("--workers", type=int, default=None,
                       help="image loading processes (default: min(8, CPUs); 0 for the tiny preset)")


def image_workers(args: Any) -> int:
    if args.workers is not None:
        return args.workers
    return 0 if args.preset == "tiny" else min(8, os.cpu_count() or 1)


def clip_pair_from_args(args: Any) -> tuple[ClipEncoder, ClipEncoder]:
    """Load (original, safe) from :func:`add_clip_arguments` options (the tiny preset builds offline models)."""
    if args.preset == "tiny":
        from ..tiny import tiny_model_dir

        model = args.model or tiny_model_dir("clip")
        safe = args.safe or tiny_model_dir("safe-sd")
    else:
        from ..encoders import DEFAULT_SAFE_TEXT_ENCODER

        model = args.model or DEFAULT_CLIP
        safe = args.safe or DEFAULT_SAFE_TEXT_ENCODER
    hub = {"cache_dir": args.cache_dir} if args.cache_dir else {}
    return load_clip_pair(model, safe, towers=args.towers, slot=args.slot, device=args.device, dtype=args.dtype,
                          allow_pickle=args.allow_pickle, **hub)
