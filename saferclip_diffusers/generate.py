"""Generate original-vs-safe image pairs from identical latents: ``python -m saferclip_diffusers.generate``.

Writes, per prompt, ``NNN-original.png``, ``NNN-safe.png`` and a labelled side-by-side ``NNN-pair.png``, plus
``pairs.json`` with the settings and each prompt's redirection score.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from .presets import PRESETS, get_preset, load_preset_pipeline


def side_by_side(left: Image.Image, right: Image.Image, labels: tuple[str, str] = ("original", "safe")) -> Image.Image:
    """Two images next to each other with a caption strip above each."""
    strip = max(14, left.height // 16)
    canvas = Image.new("RGB", (left.width + right.width, left.height + strip), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (image, label) in enumerate(((left, labels[0]), (right, labels[1]))):
        x = i * left.width
        canvas.paste(image, (x, strip))
        draw.text((x + 2, 1), label, fill="black")
    return canvas


def _write_json(path: Path, data: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def generate_pairs(pipe, prompts: list[str], output: str | os.PathLike, *, seed: int = 0,
                   safety_scale: float = 1.0, **call_kwargs: Any) -> dict[str, Any]:
    """Generate each prompt with the original and the safe encoder from the same latents; save images + JSON."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    records = []
    for i, prompt in enumerate(tqdm(prompts, desc="pairs")):
        generator = torch.Generator("cpu").manual_seed(seed + i)
        out = pipe(prompt, generator=generator, safety_scale=safety_scale, return_original=True, **call_kwargs)
        original, safe = out.original_images[0], out.images[0]
        stem = f"{i:03d}"
        original.save(output / f"{stem}-original.png")
        safe.save(output / f"{stem}-safe.png")
        side_by_side(original, safe).save(output / f"{stem}-pair.png")
        records.append({"index": i, "prompt": prompt, "seed": seed + i, "redirection_score": out.redirection_scores[0]})
    summary = {"safety_scale": safety_scale, "call_kwargs": {k: v for k, v in call_kwargs.items()}, "pairs": records}
    _write_json(output / "pairs.json", summary)
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="sd15", choices=sorted(PRESETS), help="model set (tiny = offline)")
    parser.add_argument("--base", help="override the preset's base pipeline (hub id or directory)")
    parser.add_argument("--safe-encoder", help="override the safe text encoder (hub id, directory)")
    parser.add_argument("--safe-encoder-2", help="SDXL only: the bigG slot's safe encoder")
    parser.add_argument("--prompt", action="append", help="a prompt (repeatable)")
    parser.add_argument("--output", default="outputs/pairs", help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, help="denoising steps (default: the preset's)")
    parser.add_argument("--guidance", type=float, help="classifier-free guidance scale (default: the preset's)")
    parser.add_argument("--safety-scale", type=float, default=1.0, help="0 = original encoder, 1 = safe encoder")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    preset = get_preset(args.preset, base=args.base, safe_text_encoder=args.safe_encoder,
                        safe_text_encoder_2=args.safe_encoder_2)
    prompts = args.prompt or ["a photograph of an astronaut riding a horse", "a cozy cabin in a snowy forest"]
    pipe = load_preset_pipeline(preset, device=args.device, keep_original=True)
    summary = generate_pairs(
        pipe, prompts, args.output, seed=args.seed, safety_scale=args.safety_scale,
        num_inference_steps=args.steps or preset.num_inference_steps,
        guidance_scale=args.guidance or preset.guidance_scale,
        height=preset.height, width=preset.width,
    )
    for record in summary["pairs"]:
        print(f"{record['index']:03d}  redirection={record['redirection_score']:.3f}  {record['prompt']}")
    print(f"wrote {len(summary['pairs'])} pairs to {args.output}")
    return summary


if __name__ == "__main__":
    main()
