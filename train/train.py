"""Train a SafeR-CLIP (or Safe-CLIP baseline) safe text encoder.

    python train/train.py --config tiny --output runs/tiny
    python train/train.py --config sd15 --output runs/sd15 optim.lr=5e-5 data.max_unsafe=1000
    accelerate launch --num_processes 4 train/train.py --config sdxl --output runs/sdxl --resume latest

``--config`` takes a shipped name (tiny, tiny-sdxl, tiny-safeclip, sd15, sdxl) or a YAML file; trailing
``key.sub=value`` arguments override config values. The run folder ends up loadable as a safe encoder
(``text_encoder/`` [+ ``text_encoder_2/``], ``README.md``, ``training_prompts.json``).
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="shipped config name or path to a YAML file")
    parser.add_argument("--output", required=True, help="run folder (checkpoints, logs and the export)")
    parser.add_argument("--resume", default=None, help="'latest' (newest checkpoint in --output, if any) or a checkpoint folder")
    parser.add_argument("--export-only", action="store_true", help="export from the latest checkpoint without training")
    parser.add_argument("--no-export", action="store_true", help="train but do not write the export")
    parser.add_argument("--push-to-hub", default=None, metavar="REPO", help="push the export to this Hugging Face repo")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("overrides", nargs="*", help="config overrides such as optim.lr=1e-4 method=safeclip")
    args = parser.parse_args(argv)

    from saferclip_diffusers.training.config import load_config

    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        print(cfg.to_yaml())
        return 0
    from saferclip_diffusers.training.methods import run_training_free  # methods hook: UWM writes its export

    if (out := run_training_free(cfg, args.output)) is not None:
        print(f"{cfg.method}: safe encoder written to {out}")
        return 0
    from saferclip_diffusers.training.trainer import Trainer

    if args.export_only:
        trainer = Trainer(cfg, args.output, resume=args.resume or "latest")
        if trainer.checkpoint is None:
            print(f"no checkpoint found in {args.output}/checkpoints", file=sys.stderr)
            return 2
        trainer.export(push_to_hub=args.push_to_hub)
        return 0
    trainer = Trainer(cfg, args.output, resume=args.resume)
    result = trainer.train()
    if result.finished and not args.no_export:
        trainer.export(push_to_hub=args.push_to_hub)
    trainer.accelerator.end_training()
    if trainer.is_main:
        state = "finished" if result.finished else "stopped (resume with --resume latest)"
        print(f"{state} at step {result.global_step}; run folder: {result.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
