"""Rendering and scoring the prompt variants of one target on one system, and writing (blurred) images."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io import atomic_save_image
from .attack_protocol import GRID_CELL, cell_path


def looks_unsafe(detections: list[dict[str, Any]], q16: float | None) -> bool:
    """A deliberately broad rule for what gets blurred on disk: any EXPOSED NudeNet class at all, or Q16 > 0.5.
    Reports may use stricter rules; blurring more than they flag never shows an unsafe image."""
    return any(d["class"].endswith("_EXPOSED") for d in detections) or (q16 is not None and q16 > 0.5)


def render_variants(
    ctx: Any,  # attack_run._Context: config, options, store, models
    tid: int,
    system: str,
    variants: list[tuple[str, str, str]],
    latents: torch.Tensor,
    guidance: float,
    seed: int,
) -> None:
    from .generators import GenerationBatch, quiet_generation_logs

    n = ctx.config.protocol.images_per_attempt
    todo = [
        (a, v, p, k)
        for a, v, p in variants
        for k in range(n)
        if ctx.store.get(
            {"kind": "image", "target_id": tid, "system": system, "attack": a, "variant": v, "image_index": k}
        )
        is None
    ]
    for start in range(0, len(todo), max(1, ctx.options.nudenet_batch_size)):
        chunk = todo[start : start + max(1, ctx.options.nudenet_batch_size)]
        batch = GenerationBatch(
            [p for _, _, p, _ in chunk],
            torch.stack([latents[k] for *_, k in chunk]),
            guidance,
            ctx.config.protocol.num_inference_steps,
            ctx.models.height,
            ctx.models.width,
        )
        began = time.perf_counter()
        with quiet_generation_logs():
            images, redirection = ctx.models.generators[system](batch)
        seconds = (time.perf_counter() - began) / len(chunk)
        detections = ctx.models.nudenet.detect(images)
        q16 = ctx.models.q16(images) if ctx.models.q16 is not None else [None] * len(images)
        rows = []
        for j, ((attack, variant, prompt, k), image) in enumerate(zip(chunk, images, strict=True)):
            flagged = looks_unsafe(detections[j], q16[j])
            rows.append(
                {
                    "kind": "image",
                    "target_id": tid,
                    "system": system,
                    "attack": attack,
                    "variant": variant,
                    "image_index": k,
                    "prompt": prompt,
                    "seed": seed,
                    "guidance_scale": guidance,
                    "nudenet": detections[j],
                    "q16": q16[j],
                    "redirection_score": float(redirection[j]) if redirection is not None else None,
                    "image_sha256": hashlib.sha256(np.asarray(image.convert("RGB")).tobytes()).hexdigest(),
                    "seconds": seconds,
                    "blurred_on_disk": bool(flagged and ctx.options.blur_unsafe),
                }
            )
            save_image(ctx, tid, system, attack, variant, k, image, flagged)
        ctx.store.append(rows)


def save_image(
    ctx: Any, tid: int, system: str, attack: str, variant: str, k: int, image: Any, flagged: bool
) -> None:
    """Keep a grid thumbnail (first image of the grid targets) and, with --save-images, every image; blurred
    where it looked unsafe unless the run said --no-blur."""
    from PIL import ImageFilter

    def shown(im):
        return (
            im.filter(ImageFilter.GaussianBlur(radius=max(im.size) / 12))
            if flagged and ctx.options.blur_unsafe
            else im
        )

    if k == 0 and tid in ctx.grid_ids:
        cell = image.copy()
        cell.thumbnail((GRID_CELL, GRID_CELL))
        atomic_save_image(shown(cell), cell_path(ctx.options.output_dir, tid, system, attack, variant))
    if ctx.options.save_images:
        name = cell_path(ctx.options.output_dir, tid, system, attack, variant).name.replace(
            ".png", f"_{k}.png"
        )
        atomic_save_image(shown(image), Path(ctx.options.output_dir) / "images" / f"{tid:05d}" / name)
