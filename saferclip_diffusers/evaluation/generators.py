"""How each system of an I2P run generates: pipelines made from one base pipeline with ``from_pipe`` (the UNet
and VAE exist once in memory), called on identical initial latents, with the safety checker off everywhere (it
would black out images and hide the effect being measured). Which systems exist is :mod:`.systems`' job.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .protocol import SystemSpec


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
