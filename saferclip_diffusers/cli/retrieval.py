"""Cross-modal retrieval (R@1/5/10 for T->V, V->T, T*->V, V*->T), original vs safe CLIP.

saferclip-retrieval --data visu_test.json --image-root /data/coco --unsafe-image-root /data/visu_nsfw
saferclip-retrieval --data nsfwcaps.csv --image-root /data/nocaps --gallery safe mixed
saferclip-retrieval --preset tiny          # offline: random-weight tiny CLIP, scikit-image photographs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..options import add_limit, add_out, positive_int
from . import run_main
from ._clip import add_clip_arguments, clip_pair_from_args, image_workers, random_weights

LAYOUTS = ("auto", "visu", "nsfwcaps")
GALLERIES = ("safe", "mixed")
NSFWCAPS_ROLES = ("safe_caption", "unsafe_caption", "safe_image", "unsafe_image", "category")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="saferclip-retrieval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data", help="ViSU JSON/JSONL or NSFWCaps-layout CSV/JSON/JSONL (required unless --preset tiny)"
    )
    data.add_argument(
        "--layout", choices=LAYOUTS, default="auto", help="auto: ViSU when records carry coco_id"
    )
    data.add_argument(
        "--image-root",
        help="ViSU: COCO root (train2017/ val2017/); NSFWCaps: image folder "
        "(default: the data file's folder)",
    )
    data.add_argument(
        "--unsafe-image-root", help="folder of the unsafe images (default: data folder / image root)"
    )
    data.add_argument("--no-unsafe-images", action="store_true", help="ignore unsafe images (no V*->T)")
    data.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="ROLE=NAME",
        help=f"NSFWCaps column names; roles: {', '.join(NSFWCAPS_ROLES)}",
    )
    add_limit(data, help="use only the first N records")
    run = parser.add_argument_group("retrieval")
    run.add_argument(
        "--gallery",
        nargs="+",
        choices=GALLERIES,
        default=["safe"],
        help="safe: safe items only (Safe-CLIP); mixed: safe and unsafe items (one table each)",
    )
    run.add_argument("--k", nargs="+", type=positive_int, default=[1, 5, 10], help="recall cut-offs")
    run.add_argument("--by-category", action="store_true", help="add T*->V and V*->T rows per category/tag")
    add_out(run, default="results/retrieval", help="output folder (tables, embedding cache)")
    add_clip_arguments(parser)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.data is None and not random_weights(args):
        parser.error("--data is required (or use --preset tiny for the offline demo)")
    try:
        args.columns = dict(c.split("=", 1) for c in args.column)
    except ValueError:
        parser.error("--column takes ROLE=NAME")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> int:
        from .._extras import require_extra

        require_extra("eval", "pandas", feature="the retrieval evaluation")
        from ..evaluation.retrieval import compare_retrieval
        from ..evaluation.retrieval_data import load_retrieval_set
        from ..evaluation.tiny_data import write_tiny_retrieval_set

        out = Path(args.out)
        data_path, image_root = args.data, args.image_root
        if data_path is None:  # tiny preset: write the scikit-image photographs and hand-written captions
            layout = "nsfwcaps" if args.layout == "nsfwcaps" else "visu"
            data_path = write_tiny_retrieval_set(out / "tiny-data" / layout, layout)
            image_root = image_root or (data_path.parent / "coco" if layout == "visu" else None)
        data = load_retrieval_set(
            data_path,
            args.layout,
            image_root=image_root,
            unsafe_image_root=args.unsafe_image_root,
            use_unsafe_images=not args.no_unsafe_images,
            limit=args.limit,
            columns=args.columns,
        )
        original, safe = clip_pair_from_args(args)
        for gallery in args.gallery:
            table = compare_retrieval(
                original,
                safe,
                data,
                gallery=gallery,
                ks=sorted(set(args.k)),
                by_category=args.by_category,
                batch_size=args.batch_size,
                image_batch_size=args.image_batch_size,
                num_workers=image_workers(args),
                cache_dir=out / "embeddings" / Path(data_path).stem,
            )
            if random_weights(args):
                table.meta["note"] = "random-weight models: the numbers say nothing about real CLIPs"
            md, js = table.write(out, f"retrieval-{Path(data_path).stem}-{gallery}")
            print(table.to_markdown())
            print(f"wrote {md} and {js}", file=sys.stderr)
        return 0

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
