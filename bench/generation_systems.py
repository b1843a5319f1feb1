"""The systems the generation benchmark times, all on one shared UNet/VAE (``from_pipe``), and the timed call.

Systems: ``plain`` (diffusers' pipeline), ``safer`` (safe encoder only), ``safer+score`` (original encoder kept:
the redirection score), ``compare`` (compare mode, one UNet batch), ``sld-medium`` / ``sld-strong`` (Safe Latent
Diffusion, SD 1.x only) and ``negative`` (plain with a safety negative prompt). Each run records step-end
timestamps, from which :func:`bench.timing.step_profile` splits a call into a fixed and a per-step part.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from .timing import step_profile

if TYPE_CHECKING:
    from .generation import GenerationConfig


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


def timed(system: System, steps: int, device: str) -> Callable[[], dict]:
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
