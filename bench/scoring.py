"""Evaluation: NudeNet throughput (batched vs one image at a time) and what scoring costs an I2P run.

NudeNet throughput
    :class:`~saferclip_diffusers.scoring.nudenet.NudeNetScorer` (the scorer the I2P runner uses) on real photographs
    (scikit-image's bundled images, resized to the generator's output size), timed alternately: one ``detect`` call
    on the whole list (batches of ``batch_size``) vs one call per image.

Scoring in an eval run
    :func:`saferclip_diffusers.evaluation.runner.run_i2p` on a few I2P prompts, real pipelines, twice per round in
    alternation: with NudeNet, and with a scorer that returns no detections. The runner scores in a worker thread
    and reports how long the generator was blocked handing a batch over (queue full) and waiting for the last
    batches at the end. Reported: that waiting time as a share of the generation
    loop's wall time, and the loop's wall time with NudeNet over the time without (which also counts the CPU the
    scoring thread takes from the generator). Both come from the runner's public hooks: ``nudenet_scorer=`` swaps
    the scorer and the returned summary's ``run_timing`` holds the waits.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .environment import cpu_supports_bf16, environment
from .report import Section, Table, Target
from .timing import alternate, paired_ratios, spread

SCORING_TARGET = 0.05
PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "cat",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
)


@dataclass
class EvalBenchConfig:
    device: str = "cpu"
    model: str = "sd15"  # sd15 (real-size, random weights) or tiny
    image_size: int = 512  # images NudeNet scores in the throughput test (SD 1.5's output size)
    images: int = 32
    nudenet_batch_size: int = 8
    throughput_rounds: int = 5
    prompts: int = 8
    height: int = 128
    width: int = 128
    steps: int = 2
    batch_size: int = 4
    dtype: str = "float32"
    run_rounds: int = 3


def default_config(device: str = "cpu", quick: bool = False) -> EvalBenchConfig:
    if quick:
        return EvalBenchConfig(
            device=device,
            model="tiny",
            images=8,
            throughput_rounds=2,
            prompts=4,
            height=32,
            width=32,
            batch_size=2,
            run_rounds=1,
        )
    if device.startswith("cuda"):
        return EvalBenchConfig(
            device=device, prompts=32, height=512, width=512, steps=50, batch_size=8, dtype="float16"
        )
    return EvalBenchConfig(device=device, dtype="bfloat16" if cpu_supports_bf16() else "float32")


# ----------------------------------------------------------------------------------------------- throughput


def photographs(n: int, size: int) -> list:
    """``n`` RGB PIL images (scikit-image's bundled photographs, cycled), resized to ``size`` x ``size``."""
    import numpy as np
    import skimage.data
    from PIL import Image

    pool = []
    for name in PHOTOS:
        array = np.asarray(getattr(skimage.data, name)())
        if array.ndim == 2:
            array = np.stack([array] * 3, axis=-1)
        pool.append(Image.fromarray(array[..., :3].astype("uint8")).convert("RGB").resize((size, size)))
    return [pool[i % len(pool)] for i in range(n)]


def measure_throughput(cfg: EvalBenchConfig) -> dict[str, Any]:
    from saferclip_diffusers.scoring.nudenet import NudeNetScorer

    images = photographs(cfg.images, cfg.image_size)
    scorer = NudeNetScorer(batch_size=cfg.nudenet_batch_size)

    def batched() -> None:
        scorer.detect(images)

    def one_at_a_time() -> None:
        for image in images:
            scorer.detect([image])

    systems = {"batched": batched, "one at a time": one_at_a_time}
    samples = alternate(systems, repeats=cfg.throughput_rounds, warmup=1, desc="NudeNet")
    return {
        "images_per_second": {n: spread([cfg.images / s.wall for s in runs]) for n, runs in samples.items()},
        "time_ratio": paired_ratios(samples, "one at a time"),
        "info": scorer.info(),
    }


# ----------------------------------------------------------------------------------------------- eval run


class NoDetections:
    """Stands in for NudeNet through the runner's public ``nudenet_scorer`` hook: same API, no work."""

    def detect(self, images):
        return [[] for _ in images]


def _run_config(cfg: EvalBenchConfig):
    from saferclip_diffusers.evaluation.prompts import PromptSelection
    from saferclip_diffusers.evaluation.runner import prepare_run

    if cfg.model == "tiny":
        kwargs: dict[str, Any] = {"protocol": "tiny"}
    else:
        from .models import real_size_dir

        kwargs = {
            "protocol": "fixed",
            "model": str(real_size_dir("sd15")),
            "safe_encoders": [str(real_size_dir("sd15-safe"))],
        }
    overrides = {
        "height": cfg.height,
        "width": cfg.width,
        "num_inference_steps": cfg.steps,
        "batch_size": cfg.batch_size,
        "num_images_per_prompt": 1,
    }
    return prepare_run(
        overrides=overrides,
        selection=PromptSelection(limit=cfg.prompts),
        systems=("safe",),
        dtype=cfg.dtype,
        device=cfg.device,
        q16_clip=None,
        **kwargs,
    )


def measure_eval_run(cfg: EvalBenchConfig) -> dict[str, Any]:
    """Alternate eval runs with NudeNet and without scoring; each in a fresh output directory."""
    from saferclip_diffusers.evaluation.runner import RunOptions, run_i2p

    config, prompts = _run_config(cfg)
    runs: dict[str, list[dict[str, float]]] = {"nudenet": [], "no scoring": []}
    with tempfile.TemporaryDirectory(prefix="saferclip-bench-eval-") as tmp:
        for r in range(cfg.run_rounds + 1):  # round 0 warms up (page-in of the weights, first-call costs)
            for name in ["nudenet", "no scoring"] if r % 2 == 0 else ["no scoring", "nudenet"]:
                options = RunOptions(
                    output_dir=Path(tmp) / f"{r}-{name}",
                    progress=False,
                    nudenet_batch_size=cfg.nudenet_batch_size,
                    device=cfg.device,
                )
                scorer = NoDetections() if name == "no scoring" else None  # None: the runner's NudeNet
                summary = run_i2p(config, prompts, options, nudenet_scorer=scorer)
                if r > 0:
                    runs[name].append(dict(summary["run_timing"]))
    share = [(t["blocked_s"] + t["tail_s"]) / t["wall_s"] for t in runs["nudenet"]]
    overhead = [
        a["wall_s"] / b["wall_s"] - 1 for a, b in zip(runs["nudenet"], runs["no scoring"], strict=True)
    ]
    return {
        "images": len(prompts) * len(config.systems),
        "protocol": asdict(config.protocol),
        "runs": runs,
        "waiting_share": spread(share),
        "wall_overhead": spread(overhead),
        "loop_seconds": {n: spread([t["wall_s"] for t in v]) for n, v in runs.items()},
    }


# ----------------------------------------------------------------------------------------------- report


def to_section(cfg: EvalBenchConfig, throughput: dict[str, Any], run: dict[str, Any]) -> Section:
    section = Section(
        name="evaluation",
        title="Evaluation: NudeNet throughput and scoring's share of an I2P run",
        environment=environment(cfg.device),
        settings=asdict(cfg),
        raw={"throughput": throughput, "run": run},
    )
    ips, ratio = throughput["images_per_second"], throughput["time_ratio"]["batched"]
    section.tables.append(
        Table(
            f"NudeNet {throughput['info']['version']} ({throughput['info']['onnx_file']}, onnxruntime "
            f"{throughput['info']['onnxruntime']}) on {cfg.images} photographs of {cfg.image_size} px",
            ["mode", "images/s (median)", "IQR", "time / one-at-a-time (per round)"],
            [
                [
                    f"batched (batch {cfg.nudenet_batch_size})",
                    ips["batched"]["median"],
                    f"{ips['batched']['q1']:.1f}–{ips['batched']['q3']:.1f}",
                    f"{ratio['median']:.3f} [{ratio['q1']:.3f}–{ratio['q3']:.3f}]",
                ],
                [
                    "one at a time",
                    ips["one at a time"]["median"],
                    f"{ips['one at a time']['q1']:.1f}–{ips['one at a time']['q3']:.1f}",
                    "1.000",
                ],
            ],
            f"Alternating rounds ({cfg.throughput_rounds}); NudeNet resizes every image to 320 px itself.",
        )
    )
    share, overhead, loop = run["waiting_share"], run["wall_overhead"], run["loop_seconds"]
    model = "SD 1.5 real-size, random weights" if cfg.model == "sd15" else "tiny models"
    p = run["protocol"]
    section.tables.append(
        Table(
            f"I2P runner, {run['images']} images ({model}, {p['height']}x{p['width']} px, {p['num_inference_steps']} "
            f"steps, batch {p['batch_size']}, {cfg.dtype}), {cfg.run_rounds} alternating rounds",
            ["run", "generation loop s (median)", "generator waiting on scoring", "wall time vs no scoring"],
            [
                [
                    "with NudeNet",
                    loop["nudenet"]["median"],
                    f"{100 * share['median']:.2f}% [{100 * share['q1']:.2f}–{100 * share['q3']:.2f}]",
                    f"{100 * overhead['median']:+.2f}% [{100 * overhead['q1']:+.2f}–{100 * overhead['q3']:+.2f}]",
                ],
                ["no scoring (null scorer)", loop["no scoring"]["median"], "–", "–"],
            ],
            "Waiting: time the generator is blocked handing a batch to the scoring thread (queue full) plus waiting "
            "for the last batches at the end, over the loop's wall time. Wall time vs no scoring also counts the CPU the "
            "scoring thread takes from the generator.",
        )
    )
    worst = max(overhead["median"], share["median"])
    met = worst <= SCORING_TARGET
    cause = (
        ""
        if met
        else (
            f"per image, NudeNet costs about {1 / ips['batched']['median']:.3f} s against "
            f"{loop['no scoring']['median'] / max(run['images'], 1):.3f} s of generation here: scoring in a worker "
            "thread can only hide behind a generator that is slower than it"
        )
    )
    if not met and cfg.model == "tiny":
        cause += " (tiny models generate in milliseconds; real models take seconds per image)"
    section.targets.append(
        Target(
            "scoring's share of an eval run's wall time",
            f"<= {100 * SCORING_TARGET:.0f}%",
            f"{100 * overhead['median']:+.2f}% wall time, {100 * share['median']:.2f}% waiting",
            met,
            cause,
        )
    )
    a100 = 1.604  # s per SD 1.5 image, 512 px, 50 steps, fp16, A100 (fal-ai/stable-diffusion-benchmarks)
    section.notes.append(
        f"Derived, not measured: at {ips['batched']['median']:.0f} images/s NudeNet takes "
        f"{1 / ips['batched']['median']:.3f} s per image on this CPU, {100 / ips['batched']['median'] / a100:.1f}% of "
        f"the {a100} s an A100 needs per SD 1.5 image (512 px, 50 steps, fp16; fal-ai/stable-diffusion-benchmarks) "
        "- work the runner's scoring thread does on the CPU while the GPU generates."
    )
    if cfg.model == "sd15" and not cfg.device.startswith("cuda"):
        section.notes.append(
            "On CPU the generator is slow (seconds per image even at this small size), so scoring hides well; on a "
            "GPU at 512 px / 50 steps an image takes about 1-2 s while NudeNet still runs on the CPU: run "
            "`python bench/run.py --device cuda --only evaluation` there for that figure."
        )
    return section


def run_evaluation(device: str = "cpu", quick: bool = False, **overrides: Any) -> Section:
    cfg = default_config(device, quick)
    for key, value in overrides.items():
        setattr(cfg, key, value)
    if cfg.model == "tiny" and not quick:
        raise ValueError("the tiny model is for --quick runs")
    torch_threads = torch.get_num_threads()
    try:
        throughput = measure_throughput(cfg)
        run = measure_eval_run(cfg)
    finally:
        torch.set_num_threads(torch_threads)
    return to_section(cfg, throughput, run)
