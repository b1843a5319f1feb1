"""Benchmarks: generation overhead, memory, training and evaluation throughput (writes bench/results/).

    python bench/run.py                               # everything, real-size architectures (random weights)
    python bench/run.py --only generation,memory      # some families (others keep their last results)
    python bench/run.py --quick                       # tiny models, about a minute: checks the harness (quick.*)
    python bench/run.py --device cuda                 # 512 px SD / 1024 px SDXL, 50 steps, fp16, +xformers

Real-size models are built once from the public configs into $SAFERCLIP_BENCH_CACHE (default
~/.cache/saferclip_diffusers/bench; SD 1.5 about 4.5 GB, SDXL about 16 GB, CLIP-L 0.5 GB on disk).
A full CPU run takes about half an hour on 2 cores; on a shared machine `--threads 1` gives steadier ratios.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# `python bench/run.py` puts bench/ itself first on sys.path; its modules (report, timing, ...) are imported as
# the package `bench` from the checkout's root instead, so that they never shadow a library's module of that name.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.suite import FAMILIES, parse_only, run_suite  # noqa: E402
from saferclip_diffusers.devices import resolve_device  # noqa: E402


def quiet_libraries() -> None:
    """diffusers/transformers chatter (deprecations of SLD, dtype casts) would bury the progress bars."""
    import warnings

    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    warnings.filterwarnings("ignore", category=FutureWarning)
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # checkpoint chatter of the training benchmark
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()


def build_parser() -> argparse.ArgumentParser:
    from saferclip_diffusers import options

    p = argparse.ArgumentParser(
        prog="bench/run.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--only", help=f"comma-separated families: {','.join(FAMILIES)} (default: all)")
    p.add_argument("--quick", action="store_true", help="tiny random models: a fast check of the harness")
    options.add_device(p)
    options.add_out(p, default=str(ROOT / "bench" / "results"), help="results folder (default bench/results)")
    p.add_argument("--models", default="sd15,sdxl", help="generation: sd15, sdxl or both (default both)")
    p.add_argument(
        "--repeats",
        type=options.positive_int,
        help="generation: alternating rounds (default 7 on CPU, 5 on CUDA)",
    )
    options.add_generation(p, only=("steps",))
    p.add_argument(
        "--size", type=options.int_range(8, 8192), help="generation: image side in px (default 128 on CPU)"
    )
    options.add_dtype(p)  # auto: float16 on CUDA; on CPU bfloat16 where the CPU has native bf16, else float32
    p.add_argument(
        "--threads",
        type=options.positive_int,
        help="torch CPU threads (default: torch's choice; 1 is steadiest on a busy machine)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    quiet_libraries()
    try:
        families = parse_only(a.only)
    except ValueError as err:
        p.error(str(err))
    dtype = None if a.dtype == "auto" else a.dtype  # auto: the family's default for the device
    overrides = {
        k: v
        for k, v in {
            "repeats": a.repeats,
            "steps": a.steps,
            "height": a.size,
            "width": a.size,
            "dtype": dtype,
        }.items()
        if v is not None
    }
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    models = tuple(m.strip() for m in a.models.split(",") if m.strip())
    bad = [m for m in models if m not in ("sd15", "sdxl")]
    if bad:
        p.error(f"--models takes sd15 and/or sdxl, got {', '.join(bad)}")
    options = {"generation": {"models": models, "overrides": overrides}}
    try:
        device = str(resolve_device(a.device))
    except ValueError as err:
        p.error(str(err))
    status = run_suite(families, device=device, quick=a.quick, out_dir=a.out, options=options)
    for family, state in status.items():
        print(f"{family}: {state}")
    return 0 if all(s == "ok" for s in status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
