"""The systems compared in one I2P run, sharing one UNet and VAE, fed identical initial latents.

``original``          the base pipeline with its own text encoder
``safe``              the base pipeline with a safe text encoder swapped in (SafeR-CLIP by default; any hub id or local
                      dir: a training export, Safe-CLIP, AdvUnlearn ...), built with ``Safer*Pipeline.from_pipe``
``negative-prompt``   the base pipeline with SLD's safety concept as negative prompt
``sld-weak|medium|strong|max``
                      Safe Latent Diffusion through diffusers' deprecated ``StableDiffusionPipelineSafe``
                      (SD 1.x/2.x only; skipped with a notice where it does not import or the base is SDXL)

All pipelines are made from one loaded base pipeline with ``from_pipe``, which shares every component it is not
given: the UNet and VAE exist once in memory. The safety checker is off everywhere (it would black out images
and hide the effect being measured).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from ..hub import is_local, require_local_dir
from ..io import EXPORT_MARKER, export_state, folder_digest
from .generators import (  # noqa: F401 - the generation side, re-exported under its old home
    GenerationBatch,
    SystemGenerator,
    build_generators,
    count_truncated,
    load_base_pipeline,
    quiet_generation_logs,
)
from .protocol import SAFETY_CONCEPT, SystemSpec

logger = logging.getLogger(__name__)

BASELINES = ("original", "safe", "negative-prompt", "sld-weak", "sld-medium", "sld-strong", "sld-max")


def sld_configs() -> dict[str, dict[str, float]] | None:
    """SLD's named hyper-parameter sets, or None when diffusers no longer ships the pipeline."""
    try:
        from diffusers.pipelines.deprecated.stable_diffusion_safe import SafetyConfig
    except ImportError:
        return None
    return {
        "sld-weak": dict(SafetyConfig.WEAK),
        "sld-medium": dict(SafetyConfig.MEDIUM),
        "sld-strong": dict(SafetyConfig.STRONG),
        "sld-max": dict(SafetyConfig.MAX),
    }


def check_safe_encoder(spec: str) -> None:
    """Refuse an encoder that cannot be what the user meant: a missing local folder, or a training export that was
    killed before it completed (its weights may load, but its training-prompt record may be missing)."""
    if is_local(spec):
        folder = require_local_dir(spec, "safe text encoder")
        if export_state(folder) == "incomplete":
            raise ValueError(
                f"the safe text encoder {spec} is an incomplete training export (no {EXPORT_MARKER}: the export was "
                "interrupted). Finish it with `python train/train.py --export-only --output "
                f"{spec}` (or export again) before evaluating it."
            )


def parse_safe_encoder(arg: str) -> tuple[str | None, str]:
    """``NAME=SPEC`` or ``SPEC`` -> (name or None, spec)."""
    name, sep, spec = arg.partition("=")
    if sep and name and "/" not in name and os.sep not in name:
        return name, spec
    return None, arg


def build_system_specs(
    systems: Sequence[str],
    safe_encoders: Sequence[str],
    *,
    sdxl: bool,
    safe_encoder_2: str | None = None,
    negative_prompt: str = SAFETY_CONCEPT,
) -> list[SystemSpec]:
    """Expand system names (``safe`` = one system per safe encoder) into specs; unavailable SLD is skipped."""
    unknown = [s for s in systems if s not in BASELINES]
    if unknown:
        raise ValueError(
            f"unknown system(s) {', '.join(map(repr, unknown))}; choose from {', '.join(BASELINES)}"
        )
    if len(set(systems)) != len(systems):
        raise ValueError(f"a system is listed twice: {', '.join(systems)}")
    specs: list[SystemSpec] = []
    sld = None
    for name in systems:
        if name == "original":
            specs.append(SystemSpec("original", "original"))
        elif name == "negative-prompt":
            specs.append(SystemSpec("negative-prompt", "negative-prompt", negative_prompt=negative_prompt))
        elif name == "safe":
            if not safe_encoders:
                raise ValueError("system 'safe' needs at least one --safe-encoder")
            parsed = [parse_safe_encoder(s) for s in safe_encoders]
            for _, spec in parsed:
                check_safe_encoder(spec)
            if safe_encoder_2 is not None:
                check_safe_encoder(safe_encoder_2)
            for i, (label, spec) in enumerate(parsed):
                label = label or (
                    "safe" if len(parsed) == 1 else f"safe-{i + 1}:{Path(spec.rstrip('/')).name}"
                )
                specs.append(
                    SystemSpec(
                        label,
                        "safe",
                        safe_text_encoder=spec,
                        safe_text_encoder_2=safe_encoder_2,
                        encoder_digest=folder_digest(spec),
                        encoder_2_digest=folder_digest(safe_encoder_2),
                    )
                )
        else:  # sld-*
            if sdxl:
                logger.warning(
                    "skipping %s: Safe Latent Diffusion exists for SD 1.x/2.x only, not SDXL", name
                )
                continue
            sld = sld if sld is not None else sld_configs()
            if sld is None:
                logger.warning(
                    "skipping %s: this diffusers no longer ships StableDiffusionPipelineSafe", name
                )
                continue
            specs.append(SystemSpec(name, "sld", sld=sld[name]))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"two systems share a name: {', '.join(names)}; name safe encoders with NAME=SPEC")
    if not specs:
        raise ValueError("no system left to evaluate")
    return specs
