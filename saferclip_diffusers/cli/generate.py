"""Generate original-vs-safe image pairs from identical noise: ``saferclip-generate`` /
``python -m saferclip_diffusers.cli.generate``.

Writes, per prompt, ``NNN-original.png``, ``NNN-safe.png`` and a labelled side-by-side ``NNN-pair.png``, plus
``pairs.json`` with the settings and each prompt's redirection score. Rerunning the same command resumes.
"""

from __future__ import annotations

import argparse
import sys

from ..options import (
    add_allow_pickle,
    add_device,
    add_dtype,
    add_generation,
    add_model,
    add_out,
    add_preset,
    add_safe_encoder,
    add_safe_encoder_2,
    float_range,
)
from . import run_main

DEFAULT_PROMPTS = ("a photograph of an astronaut riding a horse", "a cozy cabin in a snowy forest")


def build_parser() -> argparse.ArgumentParser:
    from ..presets import PRESETS

    parser = argparse.ArgumentParser(prog="saferclip-generate", description=__doc__.splitlines()[0])
    add_preset(parser, sorted(PRESETS), default="sd15")
    add_model(parser, help="override the preset's base pipeline (Hub id or local folder)")
    add_safe_encoder(parser, help="override the preset's safe text encoder (Hub id, training export, folder)")
    add_safe_encoder_2(parser)
    parser.add_argument(
        "--prompt", action="append", help="a prompt (repeatable; default: two harmless examples)"
    )
    add_out(parser, default="outputs/pairs")
    add_generation(parser, only=("steps", "guidance_scale", "height", "width", "seed", "negative_prompt"))
    parser.add_argument(
        "--safety-scale",
        dest="safety_scale",
        type=float_range(0.0, 1.0),
        default=1.0,
        help="0 = original encoder, 1 = safe encoder",
    )
    parser.add_argument(
        "--negative-prompt-encoder",
        dest="negative_prompt_encoder",
        choices=("original", "safe"),
        default="original",
        help="which encoder reads --negative-prompt (default: original)",
    )
    add_device(parser)
    add_dtype(parser)
    add_allow_pickle(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main(lambda: _generate(args))


def _generate(args: argparse.Namespace) -> int:
    from ..devices import parse_dtype, resolve_device
    from ..pairs import generate_pairs
    from ..presets import get_preset, load_preset_pipeline

    device = resolve_device(args.device)
    preset = get_preset(
        args.preset,
        base=args.model,
        safe_text_encoder=args.safe_encoder,
        safe_text_encoder_2=args.safe_encoder_2,
        torch_dtype=parse_dtype(args.dtype),
    )
    prompts = args.prompt or list(DEFAULT_PROMPTS)
    pipe = load_preset_pipeline(preset, device=device, keep_original=True, allow_pickle=args.allow_pickle)
    call = {
        "num_inference_steps": args.steps or preset.num_inference_steps,
        "guidance_scale": args.guidance_scale if args.guidance_scale is not None else preset.guidance_scale,
        "height": args.height or preset.height,
        "width": args.width or preset.width,
        "negative_prompt_encoder": args.negative_prompt_encoder,
    }
    if args.negative_prompt:
        call["negative_prompt"] = args.negative_prompt
    settings = {
        "preset": preset.name,
        "base": preset.base,
        "safe_text_encoder": preset.safe_text_encoder,
        "safe_text_encoder_2": preset.safe_text_encoder_2,
        "random_weights": preset.random_weights,
        "dtype": str(pipe.dtype).removeprefix("torch."),
    }
    summary = generate_pairs(
        pipe, prompts, args.out, seed=args.seed, safety_scale=args.safety_scale, settings=settings, **call
    )
    for record in summary["pairs"]:
        print(f"{record['index']:03d}  redirection={record['redirection_score']:.3f}  {record['prompt']}")
    if preset.random_weights:
        print("note: random-weight models: these images and scores say nothing about real models")
    print(f"wrote {len(summary['pairs'])} pairs to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
