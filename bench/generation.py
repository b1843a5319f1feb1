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
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from .environment import environment
from .report import Section, Table, Target
from .timing import (
    Clock,
    Sample,
    alternate,
    paired_differences,
    paired_ratios,
    project,
    ratio_of_minima,
    spread,
    step_profile,
)

PROMPT = "a photograph of an astronaut riding a horse on the moon"
NEGATIVE_PROMPT = "nudity, naked, nsfw, sexual, violence, blood, gore, weapons"
SAFER_TARGET = 1.01


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


# ----------------------------------------------------------------------------------------------- systems


@dataclass
class System:
    label: str
    images_per_call: int
    run: Callable[[int, list[float]], None]  # (num_inference_steps, step-end stamps to append to)
    pipe: Any = None  # its pipeline: the scheduler tells how many denoising iterations a call ran


def model_dirs(model: str) -> tuple[str, str]:
    """(base pipeline dir, safe encoder export dir) for a benchmark model."""
    if model in ("tiny", "tiny-sdxl"):
        from saferclip_diffusers.presets import get_preset

        preset = get_preset(model)
        return preset.base, preset.safe_text_encoder
    if model in ("sd15", "sdxl"):
        from .models import real_size_dir

        return str(real_size_dir(model)), str(real_size_dir(f"{model}-safe"))
    raise ValueError(f"unknown benchmark model {model!r}; choose sd15, sdxl, tiny or tiny-sdxl")


def load_systems(cfg: GenerationConfig) -> tuple[dict[str, System], Any]:
    """Load the plain pipeline once and build every system on its UNet/VAE. Returns (systems, plain pipeline)."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    from saferclip_diffusers.pipelines import SaferStableDiffusionPipeline, SaferStableDiffusionXLPipeline

    base, safe = model_dirs(cfg.model)
    dtype = getattr(torch, cfg.dtype)
    plain_cls, safer_cls = (
        (StableDiffusionXLPipeline, SaferStableDiffusionXLPipeline)
        if cfg.sdxl
        else (StableDiffusionPipeline, SaferStableDiffusionPipeline)
    )
    plain = plain_cls.from_pretrained(base, torch_dtype=dtype, local_files_only=True, use_safetensors=True)
    plain = plain.to(cfg.device)
    safer = safer_cls.from_pipe(plain, safe_text_encoder=safe, keep_original=False, use_xformers=False)
    encoders = {"safe_text_encoder": safer.text_encoder}
    if cfg.sdxl:
        encoders["safe_text_encoder_2"] = safer.text_encoder_2
    scored = safer_cls.from_pipe(plain, **encoders, keep_original=True, use_xformers=False)
    pipes = [plain, safer, scored]

    def common(steps: int) -> dict[str, Any]:
        return dict(
            height=cfg.height,
            width=cfg.width,
            num_inference_steps=steps,
            guidance_scale=cfg.guidance_scale,
            generator=torch.Generator(cfg.device).manual_seed(0),
        )

    def new_style(pipe, **extra):
        def run(steps: int, stamps: list[float]) -> None:
            def on_step(_pipe, _i, _t, kwargs):
                stamps.append(_now(cfg.device))
                return kwargs

            pipe(cfg.prompt, **common(steps), callback_on_step_end=on_step, **extra)

        return run

    systems = {
        "plain": System("plain diffusers pipeline", 1, new_style(plain), plain),
        "safer": System("Safer pipeline (safe encoder only)", 1, new_style(safer), safer),
        "safer+score": System(
            "Safer pipeline + original kept (redirection score)", 1, new_style(scored), scored
        ),
        "compare": System(
            "compare mode (safe + original image, one batch)",
            2,
            new_style(scored, return_original=True),
            scored,
        ),
    }
    if not cfg.sdxl:
        from diffusers.pipelines.deprecated.stable_diffusion_safe import (
            SafetyConfig,
            StableDiffusionPipelineSafe,
        )

        # from_pipe casts the modules it shares to its torch_dtype (float32 by default): pass the pipeline's own
        sld = StableDiffusionPipelineSafe.from_pipe(plain, requires_safety_checker=False, torch_dtype=dtype)
        pipes.append(sld)

        def sld_run(config: dict) -> Callable[[int, list[float]], None]:
            def run(steps: int, stamps: list[float]) -> None:
                sld(
                    cfg.prompt,
                    **common(steps),
                    callback=lambda *_: stamps.append(_now(cfg.device)),
                    callback_steps=1,
                    **config,
                )

            return run

        systems["sld-medium"] = System("SLD, MEDIUM", 1, sld_run(SafetyConfig.MEDIUM), sld)
        systems["sld-strong"] = System("SLD, STRONG", 1, sld_run(SafetyConfig.STRONG), sld)
    systems["negative"] = System(
        "plain + safety negative prompt", 1, new_style(plain, negative_prompt=cfg.negative_prompt), plain
    )
    for pipe in pipes:
        pipe.set_progress_bar_config(disable=True)
    return systems, plain


def _now(device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter()


def _timed(system: System, steps: int, device: str) -> Callable[[], dict]:
    """A zero-argument call for :func:`alternate` that returns the call's step profile."""

    def call() -> dict:
        stamps: list[float] = []
        start = _now(device)
        with warnings.catch_warnings():  # random weights: NaN pixels make numpy warn on the uint8 cast
            warnings.simplefilter("ignore", RuntimeWarning)
            system.run(steps, stamps)
        total = _now(device) - start
        iterations = len(system.pipe.scheduler.timesteps) if system.pipe is not None else None
        return {"profile": step_profile(total, stamps, start, iterations)}

    return call


def set_attention(plain, attention: str) -> None:
    """Switch the shared UNet/VAE between PyTorch SDPA and xformers (all systems share them)."""
    if attention == "xformers":
        plain.enable_xformers_memory_efficient_attention()
    elif attention == "sdpa":
        plain.disable_xformers_memory_efficient_attention()
    else:
        raise ValueError(f"unknown attention {attention!r}: sdpa or xformers")


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
            _timed(system, 1, cfg.device)()
        calls = {name: _timed(s, cfg.steps, cfg.device) for name, s in systems.items()}
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


# ----------------------------------------------------------------------------------------------- report


def _ratio(stats: dict | None) -> str:
    if not stats:
        return "–"
    return f"{stats['median']:.3f} [{stats['q1']:.3f}–{stats['q3']:.3f}]"


def _delta(stats: dict | None) -> str:
    if not stats:
        return "–"
    return f"{stats['median']:+.2f} [{stats['q1']:+.2f}–{stats['q3']:+.2f}]"


def safer_target(model: str, attention: str, res: dict) -> Target:
    """Safer / plain <= 1.01, judged on the per-call wall-clock median of the head-to-head rounds where run (else of
    the all-systems rounds); a miss is traced to its part."""
    res = res.get("head_to_head") or res
    wall, step = res["wall_per_call"]["safer"], res.get("per_step", {}).get("safer")
    fixed, fastest = res.get("fixed_delta", {}).get("safer"), res["fastest_per_image"]["safer"]
    share = res.get("fixed_delta_share", {}).get("safer")
    value = f"{wall['median']:.3f} (IQR {wall['q1']:.3f}–{wall['q3']:.3f}, n={wall['n']})"
    met = wall["median"] <= SAFER_TARGET
    cause = ""
    if met and wall["q3"] > SAFER_TARGET:
        cause = "median within target; the spread between rounds is wider than the 1% margin"
    if not met:
        parts = []
        if wall["q1"] <= 1.0 <= wall["q3"] or wall["q1"] <= SAFER_TARGET:
            parts.append(
                f"the rounds' spread (IQR {wall['q1']:.3f}–{wall['q3']:.3f}) includes the target: "
                "run-to-run noise, not a systematic cost"
            )
        parts.append(f"fastest round vs fastest round {fastest:.3f}")
        if step and fixed:
            parts.append(
                f"per-step ratio {step['median']:.3f}, fixed part (encode + decode) {fixed['median']:+.2f} s"
            )
        if share is not None:
            parts.append(f"at 50 steps the fixed-part difference is {100 * share:+.2f}% of a plain image")
        parts.append("the Safer path runs the same encoder and UNet calls as plain (same FLOPs)")
        cause = "; ".join(parts)
    elif share is not None:
        cause = (cause + "; " if cause else "") + f"projected text-side cost at 50 steps {100 * share:+.2f}%"
    return Target(f"Safer / plain, {model} ({attention})", f"<= {SAFER_TARGET}", value, met, cause)


def to_section(runs: list[dict[str, Any]], device: str, skipped: list[str] | None = None) -> Section:
    """The generation section: one table per model and attention implementation, one target each."""
    section = Section(
        name="generation",
        title="Generation overhead (per-image time relative to plain diffusers)",
        environment=environment(device),
    )
    for run in runs:
        cfg = run["config"]
        for attention, res in run["results"].items():
            projected = "projected_per_call" in res
            columns = [
                "system",
                "images/call",
                "s/call (median)",
                "ratio per call",
                "ratio per image",
                "fastest/fastest per image",
                "CPU-time ratio",
                "per-step ratio",
                "fixed part Δ s",
            ]
            if projected:
                columns += [
                    f"projected ratio/image at {cfg['project_steps']} steps",
                    f"fixed Δ / {cfg['project_steps']}-step plain image",
                ]
            rows = []
            for name, label in res["labels"].items():
                n_img = res["images_per_call"][name]
                row = [
                    label,
                    n_img,
                    res["seconds_per_call"][name]["median"],
                    _ratio(res["wall_per_call"][name]),
                    _ratio(res["wall_per_image"][name]),
                    f"{res['fastest_per_image'][name]:.3f}",
                    _ratio(res["cpu_per_call"][name]),
                    _ratio(res.get("per_step", {}).get(name)),
                    _delta(res.get("fixed_delta", {}).get(name)),
                ]
                if projected:
                    p = res["projected_per_call"][name]
                    row += [f"{p['median'] / n_img:.3f}", f"{100 * res['fixed_delta_share'][name]:+.2f}%"]
                rows.append(row)
            title = (
                f"{cfg['model']} (random weights), {cfg['height']}x{cfg['width']} px, {cfg['steps']} steps, "
                f"guidance {cfg['guidance_scale']}, {cfg['dtype']}, {attention}, {cfg['threads']} torch threads, "
                f"{cfg['repeats']} alternating rounds"
            )
            note = (
                "Ratios: median [quartiles] over rounds of (system / plain) within a round; fastest/fastest compares "
                "each system's least disturbed round. The fixed part is text encoding, set-up and VAE decoding "
                "(shown as the difference to plain in seconds); per-step is one denoising step (UNet batch: plain 2, "
                "compare 4, SLD 3)."
            )
            if projected:
                note += (
                    f" Projected = fixed + {cfg['project_steps']} x per-step, per round: what the measured parts "
                    "imply at the real step count (an extrapolation, not a measurement). Fixed Δ / plain image: "
                    "the median fixed-part difference over a projected plain image; for systems that run plain's "
                    "UNet batch (Safer, negative prompt) it is their whole extra cost at the real step count."
                )
            section.tables.append(Table(title, columns, rows, note))
            duel = res.get("head_to_head")
            if duel:
                d_cols = [
                    "pair",
                    "rounds",
                    "ratio per call",
                    "fastest/fastest",
                    "per-step ratio",
                    "fixed part Δ s",
                ]
                d_row = [
                    "Safer / plain",
                    duel["wall_per_call"]["safer"]["n"],
                    _ratio(duel["wall_per_call"]["safer"]),
                    f"{duel['fastest_per_image']['safer']:.3f}",
                    _ratio(duel.get("per_step", {}).get("safer")),
                    _delta(duel.get("fixed_delta", {}).get("safer")),
                ]
                if "fixed_delta_share" in duel:
                    d_cols.append(f"fixed Δ / {cfg['project_steps']}-step plain image")
                    d_row.append(f"{100 * duel['fixed_delta_share']['safer']:+.2f}%")
                section.tables.append(
                    Table(
                        f"{cfg['model']}: plain vs Safer head to head (the two alone, order plain-Safer, Safer-plain, ...)",
                        d_cols,
                        [d_row],
                        "The Safer / plain target is judged on these rounds: nothing runs between the "
                        "pair, and alternating the order cancels drift.",
                    )
                )
            section.targets.append(safer_target(cfg["model"], attention, res))
        section.raw[cfg["model"]] = run
    if any(not run["config"]["model"].startswith("tiny") for run in runs):
        section.notes.append("Real-size architectures with random weights; images are noise.")
    section.notes.append(
        "SLD is SD 1.x only (diffusers' deprecated StableDiffusionPipelineSafe); none for SDXL."
    )
    for note in skipped or []:
        section.notes.append(note)
    return section


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
