"""Side-by-side demo: the original and the SafeR-CLIP safe text encoder on one prompt, from identical latents.

    python demo/app.py --model sd15                 # SD 1.5 + the released SafeR-CLIP weights (GPU)
    python demo/app.py --model tiny --device cpu    # offline, random-weight tiny models

Serves on http://127.0.0.1:7860 by default; --share (a public gradio.live link) only when asked.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before anything imports gradio

from saferclip_diffusers.demo.interpret import DEFAULT_POOL_SIZE  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="sd15",
                   help="sd15 | sdxl | tiny | tiny-sdxl, or the hub id / directory of an SD 1.x/2.x or SDXL pipeline")
    p.add_argument("--safe-encoder", default=None,
                   help="safe text encoder: hub id or directory (default: the preset's, else Adeely93/SafeR_CLIP)")
    p.add_argument("--safe-encoder-2", default=None, help="SDXL only: safe encoder for the bigG slot (text_encoder_2)")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu, mps ... (default: cuda when available)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"],
                   help="auto = float16 on CUDA, float32 elsewhere")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    p.add_argument("--concurrency", type=int, default=1, help="generations run at once (default 1)")
    p.add_argument("--queue-size", type=int, default=16, help="requests that may wait; more are refused")
    p.add_argument("--max-steps", type=int, default=50)
    p.add_argument("--max-images", type=int, default=4, help="images per side per request")
    p.add_argument("--max-size", type=int, default=None,
                   help="largest width/height in px (default: twice the model's size, at most 1536)")
    p.add_argument("--caption-pool-size", type=int, default=DEFAULT_POOL_SIZE,
                   help="COCO captions for 'Interpreted as' (0 turns it off)")
    p.add_argument("--cache-dir", default=None, help="where caption embeddings are cached (default ~/.cache/...)")
    p.add_argument("--nudenet-threshold", type=float, default=0.6, help="score at which an exposed class is unsafe")
    p.add_argument("--sd-safety-checker", action="store_true",
                   help="keep diffusers' SD 1.x safety checker (it blacks out flagged images on both sides)")
    p.add_argument("--allow-pickle", action="store_true", help="accept pickle checkpoints (they can run code)")
    args = p.parse_args(argv)
    for name in ("concurrency", "queue_size", "max_steps", "max_images"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.caption_pool_size < 0:
        p.error("--caption-pool-size must be 0 (off) or more")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from saferclip_diffusers.demo.app import build_demo, launch_demo
    from saferclip_diffusers.demo.engine import build_engine

    if args.share:
        print("warning: --share publishes this demo on a public gradio.live URL", file=sys.stderr)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: binding {args.host}: other machines on the network can reach the demo", file=sys.stderr)
    engine = build_engine(
        args.model, safe_encoder=args.safe_encoder, safe_encoder_2=args.safe_encoder_2, device=args.device,
        dtype=args.dtype, caption_pool_size=args.caption_pool_size, cache_dir=args.cache_dir,
        nudenet_threshold=args.nudenet_threshold, max_size=args.max_size, max_steps=args.max_steps,
        max_images=args.max_images, sd_safety_checker=args.sd_safety_checker, allow_pickle=args.allow_pickle,
    )
    demo = build_demo(engine, concurrency_limit=args.concurrency, queue_size=args.queue_size)
    launch_demo(demo, host=args.host, port=args.port, share=args.share)


if __name__ == "__main__":
    main()
