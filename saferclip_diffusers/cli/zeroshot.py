"""Zero-shot image classification (top-K accuracy over ImageFolder data sets), original vs safe CLIP.

saferclip-zeroshot --data imagenet=/data/imagenet/val --classnames imagenet
saferclip-zeroshot --preset tiny           # offline: random-weight tiny CLIP, scikit-image photographs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..options import add_out, positive_int
from . import run_main
from ._clip import add_clip_arguments, clip_pair_from_args, image_workers, random_weights


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="saferclip-zeroshot", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="[NAME=]ROOT",
        help="ImageFolder-style root (one sub-folder per class); repeat for several data sets",
    )
    data.add_argument(
        "--classnames",
        action="append",
        default=[],
        metavar="SPEC",
        help="class names: 'imagenet', a JSON ({folder: name} or list) or TXT file (one per line, "
        "sorted-folder order); give one for all data sets or one per --data "
        "(default: folder names, ImageNet names for WordNet-id folders)",
    )
    data.add_argument(
        "--templates",
        default="openai-imagenet",
        help="openai-imagenet (80), simple-imagenet (7), photo, or a TXT file with '{}' per line",
    )
    data.add_argument("--limit-per-class", type=positive_int, help="use at most N images per class")
    parser.add_argument("--k", nargs="+", type=positive_int, default=[1, 5], help="top-K accuracies")
    add_out(parser, default="results/zeroshot", help="output folder (tables, embedding cache)")
    add_clip_arguments(parser)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.data and not random_weights(args):
        parser.error("--data is required (or use --preset tiny for the offline demo)")
    if len(args.classnames) not in (0, 1, len(args.data)):
        parser.error(
            f"give --classnames once or once per --data ({len(args.data)}), not {len(args.classnames)} times"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> int:
        from ..evaluation.zeroshot import (
            compare_zeroshot,
            load_image_folder,
            resolve_templates,
            write_tiny_image_folder,
        )

        out = Path(args.out)
        entries = list(args.data)
        if not entries:  # tiny preset: an ImageFolder of scikit-image photographs
            entries = [f"tiny={write_tiny_image_folder(out / 'tiny-data' / 'images')}"]
        if len(args.classnames) == 1:
            classnames = args.classnames * len(entries)
        else:
            classnames = args.classnames or [None] * len(entries)
        datasets = []
        for entry, names in zip(entries, classnames, strict=True):
            name, sep, root = entry.partition("=")
            if not sep or "/" in name:  # a bare path (which may itself contain '=')
                name, root = None, entry
            datasets.append(load_image_folder(root, names, name=name, limit_per_class=args.limit_per_class))
        templates = resolve_templates(args.templates)
        original, safe = clip_pair_from_args(args)
        table = compare_zeroshot(
            original,
            safe,
            datasets,
            templates,
            ks=sorted(set(args.k)),
            batch_size=args.batch_size,
            image_batch_size=args.image_batch_size,
            num_workers=image_workers(args),
            cache_dir=out / "embeddings",
        )
        table.meta["templates"] = f"{args.templates} ({len(templates)})"
        table.meta["data"] = {
            d.name: f"{d.root} ({len(d.classnames)} classes, {len(d.samples)} images)" for d in datasets
        }
        if random_weights(args):
            table.meta["note"] = "random-weight models: the numbers say nothing about real CLIPs"
        md, js = table.write(out, "zeroshot")
        print(table.to_markdown())
        print(f"wrote {md} and {js}", file=sys.stderr)
        return 0

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
