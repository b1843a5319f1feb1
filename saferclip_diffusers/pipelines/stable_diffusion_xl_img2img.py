"""``SaferStableDiffusionXLImg2ImgPipeline``: SDXL image-to-image with safe text encoder(s) (see :mod:`.conditioning`)."""

from __future__ import annotations

from diffusers import StableDiffusionXLImg2ImgPipeline

from .base import SaferSDXLMixin
from .signatures import safer_call, safer_init


class SaferStableDiffusionXLImg2ImgPipeline(SaferSDXLMixin, StableDiffusionXLImg2ImgPipeline):
    r"""SDXL image-to-image (:class:`diffusers.StableDiffusionXLImg2ImgPipeline`) whose text-encoder slot(s) hold safe encoders.

    ``original_<slot>`` holds the base model's encoder when kept (``keep_original=True``, or ``from_pipe``); it
    enables ``safety_scale`` below 1, compare mode (``return_original=True``), redirection scores and negative
    prompts read by the original encoder. Everything else is the parent's: same arguments, same outputs plus
    ``original_images`` and ``redirection_scores``.
    """

    _one_batch_compare = False  # the parent encodes the image with the generator, then draws the noise
    model_cpu_offload_seq = (
        "original_text_encoder->original_text_encoder_2->"
        + StableDiffusionXLImg2ImgPipeline.model_cpu_offload_seq
    )
    _optional_components = StableDiffusionXLImg2ImgPipeline._optional_components + [
        "original_text_encoder",
        "original_text_encoder_2",
    ]
    __init__ = safer_init(StableDiffusionXLImg2ImgPipeline, ("text_encoder", "text_encoder_2"))
    __call__ = safer_call(StableDiffusionXLImg2ImgPipeline)
