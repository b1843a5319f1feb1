"""Side-by-side demo: the original and the SafeR-CLIP safe text encoder on one prompt, from identical latents.

    saferclip-demo --model sd15                 # SD 1.5 + the released SafeR-CLIP weights (GPU)
    saferclip-demo --model tiny --device cpu    # offline, random-weight tiny models
    python demo/app.py ...                      # the same, from a checkout

Serves on http://127.0.0.1:7860 by default; --share (a public gradio.live link) only when asked. The page is
served at once; the "Interpreted as" caption index is built in the background (the panel says "indexing n/N").
"""

from __future__ import annotations

import argparse
import os
import sys

from .. import options
from ..options import float_range, int_range, nonneg_int, positive_int, probability
from . import run_main

DEFAULT_POOL_SIZE = 5000  # COCO captions for "Interpreted as" (saferclip_diffusers.demo.interpret)
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="saferclip-demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    options.add_model(
        p,
        default="sd15",
        help="sd15 | sdxl | tiny | tiny-sdxl, or the Hub id / folder of an SD 1.x/2.x or SDXL pipeline",
    )
    options.add_safe_encoder(
        p,
        help="safe text encoder: Hub id or folder (default: the preset's, else the released "
        "SafeR-CLIP weights)",
    )
    options.add_safe_encoder_2(p)
    options.add_device(p)
    options.add_dtype(p)
    options.add_allow_pickle(p)
    p.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int_range(1, 65535), default=7860, help="TCP port (default 7860)")
    p.add_argument(
        "--share", action="store_true", help="also open a public gradio.live link (off by default)"
    )
    p.add_argument("--concurrency", type=positive_int, default=1, help="generations run at once (default 1)")
    p.add_argument(
        "--queue-size", type=positive_int, default=16, help="requests that may wait; more are refused"
    )
    p.add_argument(
        "--max-steps", type=int_range(1, 1000), default=50, help="most denoising steps a request may ask"
    )
    p.add_argument("--max-images", type=int_range(1, 16), default=4, help="images per side per request")
    p.add_argument(
        "--max-size",
        type=int_range(64, 4096),
        default=None,
        help="largest width/height in px (default: twice the model's size, at most 1536)",
    )
    p.add_argument(
        "--caption-pool-size",
        type=nonneg_int,
        default=DEFAULT_POOL_SIZE,
        help="COCO captions for 'Interpreted as' (0 turns it off)",
    )
    p.add_argument(
        "--cache-dir", default=None, help="where caption embeddings are cached (default ~/.cache/...)"
    )
    p.add_argument(
        "--nudenet-threshold",
        type=probability,
        default=0.6,
        help="NudeNet score at which an exposed class makes an image unsafe",
    )
    p.add_argument(
        "--max-file-size",
        type=float_range(0.0),
        default=1.0,
        metavar="MB",
        help="largest upload gradio accepts, in MB (the page takes no files; default 1)",
    )
    p.add_argument(
        "--attack-steps",
        type=int_range(0, 500),
        default=20,
        help="swap-gcg steps of the 'Try to break it' button (64 candidates each; 0 hides the button)",
    )
    p.add_argument(
        "--sd-safety-checker",
        action="store_true",
        help="keep diffusers' SD 1.x safety checker (it blacks out flagged images on both sides)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: no outbound analytics calls
    return run_main(lambda: serve(args))


def serve(args: argparse.Namespace) -> int:
    # the model first, gradio after: a model that cannot be had fails before gradio loads
    from ..demo.engine import build_engine

    if args.share:
        print("warning: --share publishes this demo on a public gradio.live URL", file=sys.stderr)
    if args.host not in LOCAL_HOSTS:
        print(
            f"warning: binding {args.host}: other machines on the network can reach the demo", file=sys.stderr
        )
    engine = build_engine(
        args.model,
        safe_encoder=args.safe_encoder,
        safe_encoder_2=args.safe_encoder_2,
        device=args.device,
        dtype=args.dtype,
        caption_pool_size=args.caption_pool_size,
        cache_dir=args.cache_dir,
        nudenet_threshold=args.nudenet_threshold,
        max_size=args.max_size,
        max_steps=args.max_steps,
        max_images=args.max_images,
        sd_safety_checker=args.sd_safety_checker,
        allow_pickle=args.allow_pickle,
        background_index=True,
        attack_steps=args.attack_steps,
    )
    from ..demo.app import build_demo, launch_demo

    demo = build_demo(engine, concurrency_limit=args.concurrency, queue_size=args.queue_size)
    launch_demo(
        demo, host=args.host, port=args.port, share=args.share, max_file_size=int(args.max_file_size * 2**20)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
