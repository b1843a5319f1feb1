"""Generation utility: CLIP score (and FID) of images generated from COCO-30k captions, original vs safe encoder.

Both images of a prompt come from the same initial latents (the row's evaluation seed), so the difference is
what the safe encoder costs in prompt fidelity. Resumable: rerun the same command to continue.

    saferclip-utility --preset sd15 --limit 1000        # SD 1.5 + SafeR-CLIP, judged by CLIP ViT-L/14
    saferclip-utility --preset sd15 --limit 5000 --fid-reference /data/coco/val2014   # + FID vs your images
    saferclip-utility --preset sdxl --limit 500 --clip-model open_clip:ViT-bigG-14/laion2b_s39b_b160k
    saferclip-utility --preset tiny --limit 8           # offline, random weights (numbers mean nothing)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..options import (
    add_allow_pickle,
    add_device,
    add_dtype,
    add_generation,
    add_limit,
    add_model,
    add_out,
    add_preset,
    add_safe_encoder,
    add_safe_encoder_2,
    positive_int,
)
from . import run_main

PRESET_CHOICES = ("sd14", "sd15", "sdxl", "tiny", "tiny-sdxl")
OPENAI_CLIP_L14 = "openai/clip-vit-large-patch14"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="saferclip-utility", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_preset(
        parser,
        PRESET_CHOICES,
        default="sd15",
        help="model set of saferclip_diffusers.presets (base + safe encoder)",
    )
    add_model(parser, help="override the preset's base pipeline (Hub id or folder)")
    add_safe_encoder(parser, help="override the preset's safe encoder (CLIP ViT-L/14 slot)")
    add_safe_encoder_2(parser)
    parser.add_argument(
        "--clip-model",
        help=f"judge CLIP (any spec saferclip-retrieval takes; default {OPENAI_CLIP_L14}, "
        "the tiny CLIP for the tiny presets)",
    )
    parser.add_argument(
        "--prompts", help="CSV with prompt and evaluation_seed columns (default: bundled COCO-30k)"
    )
    add_limit(parser, help="first N prompts (default: all 30,000)")
    add_generation(
        parser, defaults={"batch_size": 4}, only=("steps", "guidance_scale", "height", "width", "batch_size")
    )
    parser.add_argument(
        "--two-pass", action="store_true", help="original and safe in two passes (less memory)"
    )
    parser.add_argument(
        "--keep-safety-checker",
        action="store_true",
        help="keep SD's safety checker (off by default: blacked-out images would distort scores)",
    )
    parser.add_argument("--save-images", action="store_true", help="also write images/{original,safe}/*.png")
    fid = parser.add_argument_group("FID (quality next to the CLIP score)")
    fid.add_argument(
        "--fid-reference",
        metavar="DIR",
        help="folder of reference images (e.g. the COCO val2014 images of the prompts): adds FID of the "
        "original and the safe images against it (saves the generated images)",
    )
    fid.add_argument("--fid-batch-size", type=positive_int, default=32, help="images per FID feature batch")
    add_device(parser)
    add_dtype(parser)
    add_allow_pickle(parser)
    add_out(parser, help="output folder (default: results/utility/<preset>)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        from ..data import COCO_30K_CSV
        from ..devices import parse_dtype, resolve_device
        from ..evaluation.clip_loading import load_clip
        from ..evaluation.utility import (
            check_run_config,
            generate_and_score,
            load_coco_prompts,
            record_run_config,
            utility_table,
        )
        from ..presets import get_preset, load_preset_pipeline

        preset = get_preset(
            args.preset,
            base=args.model,
            safe_text_encoder=args.safe_encoder,
            safe_text_encoder_2=args.safe_encoder_2,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance_scale,
            height=args.height,
            width=args.width,
        )
        random_weights = bool(getattr(preset, "random_weights", preset.offline))
        from ..evaluation.systems import check_safe_encoder

        for spec in (preset.safe_text_encoder, preset.safe_text_encoder_2):
            if spec is not None:
                check_safe_encoder(str(spec))  # a missing folder or a killed training export is refused
        device = resolve_device(args.device)
        dtype = parse_dtype(args.dtype) or preset.dtype_for(device)
        out = Path(args.out or f"results/utility/{preset.name}")
        prompts_file = args.prompts or str(COCO_30K_CSV)
        if args.fid_reference:
            from ..evaluation.fid import list_images

            list_images(args.fid_reference)  # fail before generating anything
        judge_spec = args.clip_model
        if judge_spec is None:
            if preset.offline:
                from ..tiny import tiny_model_dir

                judge_spec = str(tiny_model_dir("clip"))
            else:
                judge_spec = OPENAI_CLIP_L14
        prompts = load_coco_prompts(prompts_file, args.limit)
        settings = {
            "base": preset.base,
            "safe_text_encoder": preset.safe_text_encoder,
            "safe_text_encoder_2": preset.safe_text_encoder_2,
            "judge": judge_spec,
            "prompts": prompts_file,
            "steps": preset.num_inference_steps,
            "guidance_scale": preset.guidance_scale,
            "height": preset.height,
            "width": preset.width,
            "dtype": str(dtype),
        }
        check_run_config(out, settings)
        extra = (
            {}
            if preset.sdxl or args.keep_safety_checker
            else {"safety_checker": None, "requires_safety_checker": False}
        )
        pipe = load_preset_pipeline(
            preset,
            device=str(device),
            keep_original=True,
            allow_pickle=args.allow_pickle,
            dtype=dtype,
            **extra,
        )
        pipe.set_progress_bar_config(disable=True)
        judge = load_clip(judge_spec, device=device, allow_pickle=args.allow_pickle)
        record_run_config(out, settings)
        save = args.save_images or bool(args.fid_reference)
        store = generate_and_score(
            pipe,
            judge,
            prompts,
            out,
            batch_size=args.batch_size,
            save_images=save,
            compare_in_one_batch=not args.two_pass,
            num_inference_steps=preset.num_inference_steps,
            guidance_scale=preset.guidance_scale,
            height=preset.height,
            width=preset.width,
        )
        rows = [store.rows[p.index] for p in prompts]
        meta = {
            "pipeline": f"{preset.name}: {preset.base}",
            "original": "the base pipeline's text encoder(s)",
            "safe": ", ".join(str(s) for s in (preset.safe_text_encoder, preset.safe_text_encoder_2) if s),
            "judge": judge_spec,
            "prompts": f"{Path(prompts_file).name}, first {len(prompts)} rows, per-row seeds",
            "generation": f"{preset.num_inference_steps} steps, guidance {preset.guidance_scale}, "
            f"{preset.width}x{preset.height}, same initial latents for original and safe",
        }
        if random_weights:
            meta["note"] = "random-weight models: the numbers say nothing about real models"
        table = utility_table(rows, meta)
        if args.fid_reference:
            from ..evaluation.fid import frechet_distances

            images = {
                kind: [out / "images" / kind / f"{p.index:05d}_{p.image_id}.png" for p in prompts]
                for kind in ("original", "safe")
            }
            fid = frechet_distances(args.fid_reference, images, batch_size=args.fid_batch_size)
            table.add("FID (lower is better)", fid["original"], fid["safe"], n=len(prompts))
            table.meta["FID"] = (
                f"torchmetrics FrechetInceptionDistance (Inception-v3, 2048-d) against "
                f"{args.fid_reference}; biased upwards with few images: compare the two columns"
            )
        md, js = table.write(out, "utility")
        print(table.to_markdown())
        print(f"wrote {md}, {js} and {out / 'scores.jsonl'}", file=sys.stderr)
        return 0

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
