"""Original-vs-safe image pairs from identical noise: images, a labelled side-by-side and ``pairs.json``.

Results are written as they come, atomically: each pair's three images, then ``pairs.json`` (the settings and one
record per finished prompt). A rerun with the same settings in the same folder skips the finished prompts, so a
killed run resumes with nothing lost or duplicated; a rerun with other settings is refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from .io import atomic_save_image, atomic_write_json

PAIRS_FILE = "pairs.json"


def side_by_side(
    left: Image.Image, right: Image.Image, labels: tuple[str, str] = ("original", "safe")
) -> Image.Image:
    """Two images next to each other with a caption strip above each."""
    strip = max(14, left.height // 16)
    canvas = Image.new("RGB", (left.width + right.width, max(left.height, right.height) + strip), "white")
    draw = ImageDraw.Draw(canvas)
    for x, image, label in ((0, left, labels[0]), (left.width, right, labels[1])):
        canvas.paste(image, (x, strip))
        draw.text((x + 2, 1), label, fill="black")
    return canvas


def _previous(path: Path, settings: dict[str, Any]) -> dict[int, dict[str, Any]]:
    if not path.exists():
        return {}
    try:
        previous = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path} is not valid JSON ({err}); move it away to start this folder afresh"
        ) from err
    if previous.get("settings") != settings:
        raise ValueError(
            f"{path.parent} holds pairs made with other settings ({previous.get('settings')}); "
            "use another output folder, or delete it to start again"
        )
    return {record["index"]: record for record in previous.get("pairs", [])}


def generate_pairs(
    pipe,
    prompts: list[str],
    output: str | os.PathLike,
    *,
    seed: int = 0,
    safety_scale: float = 1.0,
    settings: dict[str, Any] | None = None,
    **call_kwargs: Any,
) -> dict[str, Any]:
    """Generate each prompt with the original and the safe encoder(s) from the same noise; save images + JSON.

    ``settings`` (JSON-able: model names, flags such as ``random_weights``) is stored with the call arguments
    and must match on resume.
    """
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    settings = {**(settings or {}), "seed": seed, "safety_scale": safety_scale, "call_kwargs": call_kwargs}
    settings = json.loads(json.dumps(settings, default=str))
    done = _previous(output / PAIRS_FILE, settings)
    records = dict(done)
    for i, prompt in enumerate(tqdm(prompts, desc="pairs")):
        if i in done and done[i]["prompt"] == prompt:
            continue
        generator = torch.Generator("cpu").manual_seed(seed + i)
        out = pipe(
            prompt, generator=generator, safety_scale=safety_scale, return_original=True, **call_kwargs
        )
        original, safe = out.original_images[0], out.images[0]
        stem = f"{i:03d}"
        atomic_save_image(original, output / f"{stem}-original.png")
        atomic_save_image(safe, output / f"{stem}-safe.png")
        atomic_save_image(side_by_side(original, safe), output / f"{stem}-pair.png")
        records[i] = {
            "index": i,
            "prompt": prompt,
            "seed": seed + i,
            "redirection_score": out.redirection_scores[0],
        }
        summary = {"settings": settings, "pairs": [records[k] for k in sorted(records)]}
        atomic_write_json(output / PAIRS_FILE, summary, indent=2)
    return {"settings": settings, "pairs": [records[k] for k in sorted(records)]}
