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

import contextlib
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..hub import is_local, require_local_dir
from ..io import EXPORT_MARKER, export_state, folder_digest  # noqa: F401 - folder_digest re-exported
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


@dataclass
class GenerationBatch:
    """One pipeline call: a prompt per image, its initial latents (unit variance), the CFG scale."""

    prompts: list[str]
    latents: torch.Tensor
    guidance_scale: float
    num_inference_steps: int
    height: int
    width: int


class SystemGenerator:
    """Generates one system's images for a batch; ``pipe`` shares its UNet and VAE with every other system."""

    def __init__(
        self,
        pipe,
        extra: dict[str, Any] | None = None,
        per_prompt: dict[str, str] | None = None,
        scores: bool = False,
    ):
        self.pipe = pipe
        self.extra = dict(extra or {})  # fixed call arguments (SLD hyper-parameters)
        self.per_prompt = dict(per_prompt or {})  # an argument repeated per prompt (negative_prompt)
        self.scores = scores  # the pipeline reports redirection scores

    def __call__(self, batch: GenerationBatch) -> tuple[list[Any], list[float] | None]:
        kwargs = {
            "prompt": batch.prompts,
            "latents": batch.latents.to(device=self.pipe.device, dtype=self.pipe.unet.dtype),
            "guidance_scale": batch.guidance_scale,
            "num_inference_steps": batch.num_inference_steps,
            "height": batch.height,
            "width": batch.width,
            "num_images_per_prompt": 1,
            "output_type": "pil",
            **self.extra,
            **{k: [v] * len(batch.prompts) for k, v in self.per_prompt.items()},
        }
        with torch.no_grad(), warnings.catch_warnings():
            # SLD warns on every call that its checker is off (what this benchmark needs) and about its deprecations
            warnings.filterwarnings("ignore", message="Safety checker disabled")
            warnings.simplefilter("ignore", FutureWarning)
            out = self.pipe(**kwargs)
        return list(out.images), (out.redirection_scores if self.scores else None)


def load_base_pipeline(
    base: str,
    *,
    sdxl: bool,
    torch_dtype: torch.dtype,
    device: torch.device | str,
    local_files_only: bool = False,
    allow_pickle: bool = False,
):
    """The plain diffusers pipeline every system is made from (safety checker off, progress bar off)."""
    from diffusers import DiffusionPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline

    index = DiffusionPipeline.load_config(base, local_files_only=local_files_only)
    name = str(index.get("_class_name", ""))
    if ("XL" in name) != sdxl:
        want = (
            "an SDXL protocol (--preset sdxl)"
            if "XL" in name
            else "an SD 1.x/2.x protocol (--preset i2p or fixed)"
        )
        raise ValueError(f"{base} is a {name or 'pipeline of unknown class'}; evaluate it with {want}")
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "local_files_only": local_files_only}
    if not allow_pickle:
        kwargs["use_safetensors"] = True
    if sdxl:
        pipe = StableDiffusionXLPipeline.from_pretrained(base, **kwargs)
    else:
        pipe = StableDiffusionPipeline.from_pretrained(
            base, safety_checker=None, feature_extractor=None, requires_safety_checker=False, **kwargs
        )
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def count_truncated(tokenizer, prompts: Sequence[str]) -> int:
    """How many prompts exceed the tokenizer's window (CLIP: 77 tokens) and are cut, as in every SD pipeline."""
    limit = tokenizer.model_max_length
    return sum(len(ids) > limit for ids in tokenizer(list(prompts), truncation=False)["input_ids"])


@contextlib.contextmanager
def quiet_generation_logs():
    """Silence the per-call truncation warnings of diffusers, transformers and our pipelines (counted up front)."""
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    ours = logging.getLogger("saferclip_diffusers.pipelines")
    saved = (diffusers_logging.get_verbosity(), transformers_logging.get_verbosity(), ours.level)
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    ours.setLevel(logging.ERROR)
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(saved[0])
        transformers_logging.set_verbosity(saved[1])
        ours.setLevel(saved[2])


def build_generators(
    base_pipe,
    specs: Sequence[SystemSpec],
    *,
    sdxl: bool,
    allow_pickle: bool = False,
    local_files_only: bool = False,
) -> dict[str, SystemGenerator]:
    """A generator per system, all made from ``base_pipe`` with ``from_pipe`` (UNet and VAE shared)."""
    generators: dict[str, SystemGenerator] = {}
    for spec in specs:
        if spec.kind == "original":
            generators[spec.name] = SystemGenerator(base_pipe)
        elif spec.kind == "negative-prompt":
            generators[spec.name] = SystemGenerator(
                base_pipe, per_prompt={"negative_prompt": spec.negative_prompt}
            )
        elif spec.kind == "safe":
            generators[spec.name] = SystemGenerator(
                _safe_pipe(base_pipe, spec, sdxl, allow_pickle, local_files_only), scores=True
            )
        elif spec.kind == "sld":
            generators[spec.name] = SystemGenerator(_sld_pipe(base_pipe), extra=dict(spec.sld or {}))
        else:
            raise ValueError(f"unknown system kind {spec.kind!r}")
    return generators


def _safe_pipe(base_pipe, spec: SystemSpec, sdxl: bool, allow_pickle: bool, local_files_only: bool):
    from ..pipelines import SaferStableDiffusionPipeline, SaferStableDiffusionXLPipeline

    cls = SaferStableDiffusionXLPipeline if sdxl else SaferStableDiffusionPipeline
    kwargs: dict[str, Any] = {
        "safe_text_encoder": spec.safe_text_encoder,
        "keep_original": True,
        "allow_pickle": allow_pickle,
    }
    if local_files_only:
        kwargs["local_files_only"] = True
    if sdxl and spec.safe_text_encoder_2 is not None:
        kwargs["safe_text_encoder_2"] = spec.safe_text_encoder_2
    pipe = cls.from_pipe(base_pipe, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _sld_pipe(base_pipe):
    from diffusers.pipelines.deprecated.stable_diffusion_safe import StableDiffusionPipelineSafe

    # dtype: diffusers' from_pipe otherwise casts the *shared* UNet and VAE to float32 for every system
    pipe = StableDiffusionPipelineSafe.from_pipe(
        base_pipe,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
        dtype=base_pipe.dtype,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
