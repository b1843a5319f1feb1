"""``SaferStableDiffusionInpaintPipeline``: Stable Diffusion 1.x / 2.x inpainting with safe text encoder(s) (see :mod:`.conditioning`)."""

from __future__ import annotations

from diffusers import StableDiffusionInpaintPipeline

from .base import SaferSDMixin
from .signatures import safer_call, safer_init


class SaferStableDiffusionInpaintPipeline(SaferSDMixin, StableDiffusionInpaintPipeline):
    r"""Stable Diffusion 1.x / 2.x inpainting (:class:`diffusers.StableDiffusionInpaintPipeline`) whose text-encoder slot(s) hold safe encoders.

    ``original_<slot>`` holds the base model's encoder when kept (``keep_original=True``, or ``from_pipe``); it
    enables ``safety_scale`` below 1, compare mode (``return_original=True``), redirection scores and negative
    prompts read by the original encoder. Everything else is the parent's: same arguments, same outputs plus
    ``original_images`` and ``redirection_scores``.
    """

    _one_batch_compare = False  # the parent encodes the image with the generator, then draws the noise
    model_cpu_offload_seq = "original_text_encoder->" + StableDiffusionInpaintPipeline.model_cpu_offload_seq
    _optional_components = StableDiffusionInpaintPipeline._optional_components + ["original_text_encoder"]
    __init__ = safer_init(StableDiffusionInpaintPipeline, ("text_encoder",))
    __call__ = safer_call(StableDiffusionInpaintPipeline)
