"""``SaferStableDiffusionImg2ImgPipeline``: Stable Diffusion 1.x / 2.x image-to-image with safe text encoder(s) (see :mod:`.conditioning`)."""

from __future__ import annotations

from diffusers import StableDiffusionImg2ImgPipeline

from .base import SaferSDMixin
from .signatures import safer_call, safer_init


class SaferStableDiffusionImg2ImgPipeline(SaferSDMixin, StableDiffusionImg2ImgPipeline):
    r"""Stable Diffusion 1.x / 2.x image-to-image (:class:`diffusers.StableDiffusionImg2ImgPipeline`) whose text-encoder slot(s) hold safe encoders.

    ``original_<slot>`` holds the base model's encoder when kept (``keep_original=True``, or ``from_pipe``); it
    enables ``safety_scale`` below 1, compare mode (``return_original=True``), redirection scores and negative
    prompts read by the original encoder. Everything else is the parent's: same arguments, same outputs plus
    ``original_images`` and ``redirection_scores``.
    """

    _one_batch_compare = False  # the parent encodes the image with the generator, then draws the noise
    model_cpu_offload_seq = "original_text_encoder->" + StableDiffusionImg2ImgPipeline.model_cpu_offload_seq
    _optional_components = StableDiffusionImg2ImgPipeline._optional_components + ["original_text_encoder"]
    __init__ = safer_init(StableDiffusionImg2ImgPipeline, ("text_encoder",))
    __call__ = safer_call(StableDiffusionImg2ImgPipeline)
