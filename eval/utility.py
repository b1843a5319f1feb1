"""Generation utility: CLIP score of images generated from COCO-30k captions, original vs safe text encoder.

Both images of a prompt come from the same initial latents (the row's evaluation seed), so the difference is
what the safe encoder costs in prompt fidelity. Resumable: rerun the same command to continue.

    python eval/utility.py --preset sd15 --limit 1000                 # SD 1.5 + SafeR-CLIP, judged by CLIP ViT-L/14
    python eval/utility.py --preset sdxl --limit 500 --clip-model open_clip:ViT-bigG-14/laion2b_s39b_b160k
    python eval/utility.py --preset tiny --limit 8                    # offline, random weights (numbers mean nothing)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from saferclip_diffusers.data import COCO_30K_CSV
from saferclip_diffusers.evaluation.clip_models import DEFAULT_CLIP, load_clip, resolve_device
from saferclip_diffusers.evaluation.utility import (
    check_run_config,
    generate_and_score,
    load_coco_prompts,
    utility_table,
)
from saferclip_diffusers.presets import PRESETS, get_preset, load_preset_pipeline


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=list(PRESETS), default="sd15", help="pipeline preset (base + safe encoder)")
    parser.add_argument("--base", help="override the preset's base pipeline (hub id or directory)")
    parser.add_argument("--safe-text-encoder", help="override the preset's safe encoder (CLIP ViT-L/14 slot)")
    parser.add_argument("--safe-text-encoder-2", help="SDXL: safe encoder for the bigG slot")
    parser.add_argument("--clip-model", help=f"judge CLIP (any spec eval/retrieval.py takes; default {DEFAULT_CLIP}, "
                                             "tiny CLIP for the tiny presets)")
    parser.add_argument("--prompts", default=str(COCO_30K_CSV), help="CSV with prompt and evaluation_seed columns")
    parser.add_argument("--limit", type=int, help="first N prompts (default: all 30,000)")
    parser.add_argument("--steps", type=int, help="inference steps (default: the preset's)")
    parser.add_argument("--guidance-scale", type=float)
    parser.add_argument("--height", type=int)
    parser.add_argument("--width", type=int)
    parser.add_argument("--batch-size", type=int, default=4, help="prompts per pipeline call (x2 images)")
    parser.add_argument("--two-pass", action="store_true", help="original and safe in two passes (less memory)")
    parser.add_argument("--keep-safety-checker", action="store_true",
                        help="keep SD's safety checker (off by default: blacked-out images would distort scores)")
    parser.add_argument("--save-images", action="store_true", help="also write images/{original,safe}/*.png")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--allow-pickle", action="store_true", help="allow pickle checkpoints (can run code)")
    parser.add_argument("--out", help="output folder (default: results/utility/<preset>)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    preset = get_preset(args.preset, base=args.base, safe_text_encoder=args.safe_text_encoder,
                        safe_text_encoder_2=args.safe_text_encoder_2, num_inference_steps=args.steps,
                        guidance_scale=args.guidance_scale, height=args.height, width=args.width)
    device = resolve_device(args.device)
    out = Path(args.out or f"results/utility/{preset.name}")
    judge_spec = args.clip_model
    if judge_spec is None:
        if preset.offline:
            from saferclip_diffusers.tiny import tiny_model_dir

            judge_spec = str(tiny_model_dir("clip"))
        else:
            judge_spec = DEFAULT_CLIP
    prompts = load_coco_prompts(args.prompts, args.limit)
    settings = {"base": preset.base, "safe_text_encoder": preset.safe_text_encoder,
                "safe_text_encoder_2": preset.safe_text_encoder_2, "judge": judge_spec, "prompts": args.prompts,
                "steps": preset.num_inference_steps, "guidance_scale": preset.guidance_scale,
                "height": preset.height, "width": preset.width, "dtype": str(preset.dtype_for(device))}
    check_run_config(out, settings)

    extra = {} if preset.sdxl or args.keep_safety_checker else {"safety_checker": None, "requires_safety_checker": False}
    pipe = load_preset_pipeline(preset, device=str(device), keep_original=True, allow_pickle=args.allow_pickle, **extra)
    pipe.set_progress_bar_config(disable=True)
    judge = load_clip(judge_spec, device=device, allow_pickle=args.allow_pickle)
    store = generate_and_score(pipe, judge, prompts, out, batch_size=args.batch_size, save_images=args.save_images,
                               compare_in_one_batch=not args.two_pass, num_inference_steps=preset.num_inference_steps,
                               guidance_scale=preset.guidance_scale, height=preset.height, width=preset.width)
    rows = [store.rows[p.index] for p in prompts]
    meta = {"pipeline": f"{preset.name}: {preset.base}", "original": "the base pipeline's text encoder(s)",
            "safe": ", ".join(str(s) for s in (preset.safe_text_encoder, preset.safe_text_encoder_2) if s),
            "judge": judge_spec, "prompts": f"{Path(args.prompts).name}, first {len(prompts)} rows, per-row seeds",
            "generation": f"{preset.num_inference_steps} steps, guidance {preset.guidance_scale}, "
                          f"{preset.width}x{preset.height}, same initial latents for original and safe"}
    if preset.offline:
        meta["note"] = "tiny preset: random-weight models, the numbers say nothing about real models"
    table = utility_table(rows, meta)
    md, js = table.write(out, "utility")
    print(table.to_markdown())
    print(f"wrote {md}, {js} and {out / 'scores.jsonl'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (FileNotFoundError, ValueError) as err:  # bad input: say what was wrong, no traceback
        sys.exit(f"error: {err}")
