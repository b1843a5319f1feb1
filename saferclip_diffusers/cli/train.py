"""Train a safe text encoder (SafeR-CLIP, Safe-CLIP, or another registered method) and export it.

    saferclip-train --config tiny --out runs/tiny
    saferclip-train --config sd15-unpaired --out runs/sd15 optim.lr=5e-5 data.max_unsafe=1000
    accelerate launch --num_processes 4 -m saferclip_diffusers.cli.train --config sdxl --out runs/sdxl --resume latest

``--config`` takes a shipped name (see ``--list-configs``) or a YAML file; trailing ``key.sub=value`` arguments
override config values. The run folder ends up loadable as a safe encoder (``text_encoder/`` [+
``text_encoder_2/``], ``README.md``, ``training_prompts.json``, ``export_complete.json`` written last).
``--resume latest`` continues the newest checkpoint; a changed config is refused unless only resumable settings
(epochs, max steps, early stopping, run.*, export.*) changed.
"""

from __future__ import annotations

import argparse
import sys

from saferclip_diffusers import options
from saferclip_diffusers.cli import run_main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="saferclip-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", help="shipped config name or path to a YAML file")
    options.add_out(parser, help="run folder (checkpoints, logs and the export)")
    parser.add_argument(
        "--resume",
        default=None,
        metavar="latest|DIR",
        help="'latest' (newest checkpoint in --out, if any) or a checkpoint folder",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--export-only", action="store_true", help="export from the latest checkpoint without training"
    )
    mode.add_argument("--no-export", action="store_true", help="train but do not write the export")
    parser.add_argument(
        "--push-to-hub", default=None, metavar="REPO", help="push the export to this Hugging Face repo"
    )
    options.add_device(parser)
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--list-configs", action="store_true", help="list the shipped configs and exit")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key.sub=value",
        help="config overrides such as optim.lr=1e-4 method=safeclip",
    )
    return parser


def _device_overrides(device: str) -> list[str]:
    """``--device`` as config overrides: cpu forces the CPU; auto/cuda keep the config (accelerate picks)."""
    if device == "cpu":
        return ["run.cpu=true"]
    if device not in ("auto",) and not device.startswith("cuda"):
        raise ValueError(f"--device {device}: training runs on cpu or cuda (accelerate places the processes)")
    return []


def _run(args: argparse.Namespace) -> int:
    from saferclip_diffusers.training.config import load_config, shipped_configs

    if args.list_configs:
        print("\n".join(shipped_configs()))
        return 0
    if not args.config:
        raise ValueError("--config is required (a shipped name such as tiny or sd15, or a YAML file)")
    overrides = list(args.overrides) + _device_overrides(args.device)
    cfg = load_config(args.config, overrides)
    if args.print_config:
        print(cfg.to_yaml())
        return 0
    if not args.out:
        raise ValueError("--out is required: the run folder for checkpoints, logs and the export")
    from saferclip_diffusers.training.methods import get_method

    method = get_method(cfg.method)
    if method.training_free:
        from saferclip_diffusers.training.run_folder import lock

        with lock(_path(args.out)):
            print(f"exported to {method.run(cfg, _path(args.out))}")
        return 0
    from saferclip_diffusers.training.run_folder import find_checkpoint
    from saferclip_diffusers.training.trainer import Trainer

    resume = args.resume or ("latest" if args.export_only else None)
    if args.export_only and find_checkpoint(_path(args.out), resume) is None:
        raise FileNotFoundError(f"no checkpoint found in {args.out}/checkpoints: nothing to export")
    with Trainer(cfg, args.out, resume=resume) as trainer:
        trainer.setup()
        if args.export_only:
            trainer.export(push_to_hub=args.push_to_hub)
            print(f"exported to {args.out}")
            return 0
        result = trainer.train()
        if result.finished and not args.no_export:
            trainer.export(push_to_hub=args.push_to_hub)
        trainer.accelerator.end_training()
        if trainer.is_main:
            state = "finished" if result.finished else "stopped (continue with --resume latest)"
            print(f"{state} at step {result.global_step}; run folder: {result.output_dir}")
    return 0


def _path(text: str):
    from pathlib import Path

    return Path(text).expanduser()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main(lambda: _run(args))


if __name__ == "__main__":
    sys.exit(main())
