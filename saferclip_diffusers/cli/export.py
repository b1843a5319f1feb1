"""``saferclip-export``: single-file text encoders for ComfyUI / A1111 / Forge / stable-diffusion.cpp, and a
one-time pickle -> safetensors conversion of peers' checkpoints.

    saferclip-export single-file runs/my-export --out exports/ [--format comfyui sdcpp ...] [--dtype float16]
    saferclip-export convert des.pt --out encoders/des --allow-pickle [--slot text_encoder_2 --base BASE_DIR]
"""

from __future__ import annotations

import argparse
import sys

from ..options import add_allow_pickle, add_dtype, add_out, int_range
from . import run_main

FORMATS = ("comfyui", "a1111", "forge", "sdcpp", "sgm")  # saferclip_diffusers.encoders.SINGLE_FILE_FORMATS
WHERE = {
    "clip_l": "ComfyUI models/text_encoders/ (CLIPLoader / DualCLIPLoader), A1111 models/CLIP/, Forge's "
    "'VAE / Text Encoder' list, stable-diffusion.cpp --clip_l",
    "clip_g": "ComfyUI models/text_encoders/ (DualCLIPLoader sdxl/sd3), A1111 models/CLIP/, Forge, "
    "stable-diffusion.cpp --clip_g",
    "clip_h": "ComfyUI models/text_encoders/ (CLIPLoader stable_diffusion)",
    "sgm": "merge into an SD 1.x / SDXL all-in-one checkpoint (replaces its text-encoder keys)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="saferclip-export", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    single = sub.add_parser(
        "single-file", help="write clip_l.safetensors / clip_g.safetensors for other tools"
    )
    single.add_argument(
        "source", help="encoder folder, training export (text_encoder/ [+ text_encoder_2/]) or file"
    )
    add_out(single)
    single.add_argument(
        "--format",
        dest="formats",
        nargs="+",
        choices=FORMATS,
        default=["comfyui", "a1111", "forge", "sdcpp"],
        help="target tools (comfyui, a1111, forge and sdcpp read the same standalone files; sgm = "
        "text-encoder keys of an all-in-one SD 1.x/SDXL checkpoint)",
    )
    add_dtype(single, default="float16")

    convert = sub.add_parser(
        "convert", help="convert a pickle checkpoint (.pt/.bin) once into a safetensors folder"
    )
    convert.add_argument(
        "checkpoint", help="DES/SAGE .pt, a pytorch_model.bin folder (AdvUnlearn), or a weights file"
    )
    add_out(convert)
    add_allow_pickle(convert)
    convert.add_argument(
        "--slot",
        choices=["text_encoder", "text_encoder_2"],
        default="text_encoder",
        help="the slot it is for (text_encoder_2 = SDXL/SD3 bigG, with projection)",
    )
    convert.add_argument(
        "--base",
        default=None,
        metavar="DIR",
        help="the base pipeline folder (or its encoder folder for this slot): the encoder's config, and "
        "its projection when the checkpoint has none (DES bigG)",
    )
    convert.add_argument(
        "--num-hidden-layers",
        dest="num_hidden_layers",
        type=int_range(1, 1000),
        default=None,
        help="keep only the first N layers (24-layer OpenCLIP-H -> 23 for SD 2.x)",
    )
    convert.add_argument(
        "--prefix", default=None, help="key prefix of the encoder inside a multi-encoder file"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        from ..devices import parse_dtype
        from ..encoders import convert_checkpoint, export_single_files

        if args.out is None:
            raise ValueError("--out is required: the folder to write into")
        try:
            if args.command == "single-file":
                import torch

                dtype = parse_dtype(args.dtype) or torch.float16  # auto: fp16, the distribution dtype
                written = export_single_files(args.source, args.out, formats=tuple(args.formats), dtype=dtype)
                for name, path in written.items():
                    print(f"{path}  ->  {WHERE.get(name, '')}")
                return 0
            out = convert_checkpoint(
                args.checkpoint,
                args.out,
                allow_pickle=args.allow_pickle,
                slot=args.slot,
                base=args.base,
                num_hidden_layers=args.num_hidden_layers,
                prefix=args.prefix,
            )
        except FileExistsError as err:
            raise ValueError(str(err)) from err
        print(f"{out}  (safetensors; load it as a safe encoder without allow_pickle)")
        return 0

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
