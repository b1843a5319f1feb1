"""Generation overhead: plain diffusers vs the Safer pipeline vs compare mode vs SLD vs a negative prompt.

All systems share one UNet/VAE (``from_pipe``) and are timed alternately in one run (see :mod:`.timing`):
every round runs each system once with the same prompt and seed; ratios to the plain pipeline are taken per
round, then the median and quartiles over rounds are reported. Each call also records step-end timestamps, so
its time splits into a fixed part (text encoding, set-up, VAE decoding) and a per-denoising-step part; from
these the ratio at the real step count (50) is projected when fewer steps were run (CPU).

Systems
    plain           diffusers' ``StableDiffusionPipeline`` / ``StableDiffusionXLPipeline``
    safer           the Safer pipeline, safe encoder(s) only (``keep_original=False``): what users run
    safer+score     the Safer pipeline with the original encoder kept (adds the redirection score per prompt)
    compare         compare mode (``return_original=True``): safe and original image from one UNet batch
    sld-medium/-strong  Safe Latent Diffusion (diffusers' deprecated ``StableDiffusionPipelineSafe``; SD 1.x only)
    negative        the plain pipeline with a safety negative prompt

This module holds the settings, the measurement and the summary; :mod:`.generation_systems` builds the systems
and times one call, :mod:`.generation_report` writes the report section and judges the target.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from .generation_report import to_section
from .generation_systems import System, load_systems, model_dirs, set_attention, timed
from .report import Section
from .timing import (
    Clock,
    Sample,
    alternate,
    paired_differences,
    paired_ratios,
    project,
    ratio_of_minima,
    spread,
)

PROMPT = "a photograph of an astronaut riding a horse on the moon"
NEGATIVE_PROMPT = "nudity, naked, nsfw, sexual, violence, blood, gore, weapons"


@dataclass(frozen=True)
class GenerationConfig:
    model: str  # sd15 | sdxl (real-size, random weights) | tiny | tiny-sdxl
    device: str = "cpu"
    height: int = 256
    width: int = 256
    steps: int = 2
    project_steps: int = 50
    repeats: int = 3
    guidance_scale: float = 7.5
    dtype: str = "float32"
    threads: int | None = (
        None  # CPU: torch threads (None: torch's default); 1 is steadiest on a shared machine
    )
    head_to_head: int = (
        12  # extra rounds of plain vs Safer alone (ABBA order) for the <= 1.01 target; 0: none
    )
    attention: tuple[str, ...] = ("sdpa",)
    prompt: str = PROMPT
    negative_prompt: str = NEGATIVE_PROMPT

    @property
    def sdxl(self) -> bool:
        return self.model in ("sdxl", "tiny-sdxl")


def default_config(model: str, device: str = "cpu", quick: bool = False) -> GenerationConfig:
    """Settings per model and device: small and few steps on CPU, the real settings on CUDA, tiny when quick."""
    sdxl = model in ("sdxl", "tiny-sdxl")
    guidance = 5.0 if sdxl else 7.5
    if quick:
        return GenerationConfig(
            model="tiny-sdxl" if sdxl else "tiny",
            device=device,
            height=32,
            width=32,
            steps=2,
            repeats=2,
            guidance_scale=guidance,
            head_to_head=2,
        )
    if device.startswith("cuda"):
        import importlib.util

        size = 1024 if sdxl else 512
        attention = ("sdpa", "xformers") if importlib.util.find_spec("xformers") else ("sdpa",)
        return GenerationConfig(
            model=model,
            device=device,
            height=size,
            width=size,
            steps=50,
            repeats=5,
            guidance_scale=guidance,
            dtype="float16",
            attention=attention,
            head_to_head=10,
        )
    from .environment import cpu_supports_bf16

    # bfloat16 where the CPU has native bf16 (about 2x faster than float32 there, and half the memory, so SDXL
    # fits beside other work in 24 GB); the ratios between systems are what is measured
    dtype = "bfloat16" if cpu_supports_bf16() else "float32"
    return GenerationConfig(
        model=model,
        device=device,
        height=128,
        width=128,
        steps=2,
        repeats=7,
        guidance_scale=guidance,
        dtype=dtype,
    )


# ----------------------------------------------------------------------------------------------- measure


def measure_generation(
    cfg: GenerationConfig, systems: dict[str, System] | None = None, plain=None
) -> dict[str, Any]:
    """Warm up each system (one call, one step), then time them alternately; per attention implementation."""
    if systems is None:
        systems, plain = load_systems(cfg)
    clock = Clock(torch.cuda.synchronize if cfg.device.startswith("cuda") else None)
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        results = _measure(cfg, systems, plain, clock)
    finally:
        torch.set_num_threads(threads)
    return {"config": {**asdict(cfg), "threads": cfg.threads or threads}, "results": results}


def _measure(cfg: GenerationConfig, systems: dict[str, System], plain, clock: Clock) -> dict[str, Any]:
    results = {}
    for attention in cfg.attention:
        if plain is not None and cfg.device.startswith("cuda"):
            set_attention(plain, attention)
        for system in systems.values():  # first calls pay one-off costs (allocations, kernel selection)
            timed(system, 1, cfg.device)()
        calls = {name: timed(s, cfg.steps, cfg.device) for name, s in systems.items()}
        samples = alternate(
            calls, repeats=cfg.repeats, warmup=0, clock=clock, desc=f"{cfg.model} {attention}"
        )
        project_steps = cfg.project_steps if cfg.steps < cfg.project_steps else None
        results[attention] = summarize(samples, systems, project_steps)
        if (
            cfg.head_to_head
        ):  # the headline pair alone: no other system between them, order plain-safer-safer-plain...
            pair = {name: calls[name] for name in ("plain", "safer")}
            duel = alternate(
                pair, repeats=cfg.head_to_head, warmup=0, clock=clock, desc=f"{cfg.model} plain vs Safer"
            )
            results[attention]["head_to_head"] = summarize(duel, {n: systems[n] for n in pair}, project_steps)
    return results


def summarize(
    samples: dict[str, list[Sample]], systems: dict[str, System], project_steps: int | None
) -> dict:
    """Per system: seconds per call, per-call and per-image ratios to plain (wall and CPU), step profile ratios."""
    per_image = {name: float(s.images_per_call) for name, s in systems.items()}
    out = {
        "wall_per_call": paired_ratios(samples, "plain"),
        "wall_per_image": paired_ratios(samples, "plain", per_call=per_image),
        "cpu_per_call": paired_ratios(samples, "plain", value=lambda s: s.cpu),
        "fastest_per_image": ratio_of_minima(samples, "plain", per_call=per_image),
        "seconds_per_call": {name: spread([s.wall for s in runs]) for name, runs in samples.items()},
    }
    if all(s.extra.get("profile") for runs in samples.values() for s in runs):
        out["per_step"] = paired_ratios(samples, "plain", value=lambda s: s.extra["profile"]["per_step"])
        out["fixed_delta"] = paired_differences(samples, "plain", value=lambda s: s.extra["profile"]["fixed"])
        out["seconds_per_step"] = {
            n: spread([s.extra["profile"]["per_step"] for s in r]) for n, r in samples.items()
        }
        if project_steps:
            out["projected_per_call"] = paired_ratios(
                samples, "plain", value=lambda s: project(s.extra["profile"], project_steps)
            )
            plain_projected = spread([project(s.extra["profile"], project_steps) for s in samples["plain"]])[
                "median"
            ]
            # the fixed-part difference as a share of a projected plain image: for systems with plain's UNet batch
            # (safer, safer+score, negative) this is their whole extra cost, free of the per-step noise
            out["fixed_delta_share"] = {
                n: d["median"] / plain_projected for n, d in out["fixed_delta"].items()
            }
    out["raw"] = {
        name: [{"wall": s.wall, "cpu": s.cpu, **(s.extra.get("profile") or {})} for s in runs]
        for name, runs in samples.items()
    }
    out["labels"] = {name: s.label for name, s in systems.items()}
    out["images_per_call"] = {name: s.images_per_call for name, s in systems.items()}
    return out


def run_generation(
    models: tuple[str, ...] | list[str] = ("sd15", "sdxl"),
    device: str = "cpu",
    quick: bool = False,
    overrides: dict[str, Any] | None = None,
) -> Section:
    """Measure every model in ``models`` (``sd15``, ``sdxl``) and return the report section."""
    runs, skipped = [], []
    for model in models:
        cfg = replace(default_config(model, device, quick), **(overrides or {}))
        problem = memory_shortfall(cfg)
        if problem:
            skipped.append(f"{cfg.model} skipped: {problem}")
            continue
        runs.append(measure_generation(cfg))
        _release()
    return to_section(runs, device, skipped)


def memory_shortfall(cfg: GenerationConfig) -> str | None:
    """Why ``cfg`` cannot fit in free CPU memory (weights of base + safe encoders), or None if it fits."""
    if cfg.model.startswith("tiny") or cfg.device.startswith("cuda"):
        return None
    from .environment import available_ram_gb

    need = _weights_gb(cfg)
    free = available_ram_gb()
    if free is not None and need * 1.15 > free:
        return (
            f"needs about {need:.1f} GB of weights in {cfg.dtype}, only {free:.1f} GB of RAM is available now"
        )
    return None


def _weights_gb(cfg: GenerationConfig) -> float:
    from pathlib import Path

    base, safe = model_dirs(cfg.model)
    files = [p for d in (base, safe) for p in Path(d).rglob("*.safetensors")]
    scale = torch.finfo(getattr(torch, cfg.dtype)).bits / 32  # stored in float32
    return sum(p.stat().st_size for p in files) * scale / 2**30


def _release() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
