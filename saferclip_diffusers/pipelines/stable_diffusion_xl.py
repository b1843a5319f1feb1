"""``SaferStableDiffusionXLPipeline``: SDXL text-to-image with safe text encoder(s) (see :mod:`.conditioning`)."""

from __future__ import annotations

from diffusers import StableDiffusionXLPipeline

from .base import SaferSDXLMixin
from .signatures import safer_call, safer_init


class SaferStableDiffusionXLPipeline(SaferSDXLMixin, StableDiffusionXLPipeline):
    r"""SDXL text-to-image (:class:`diffusers.StableDiffusionXLPipeline`) whose text-encoder slot(s) hold safe encoders.

    ``original_<slot>`` holds the base model's encoder when kept (``keep_original=True``, or ``from_pipe``); it
    enables ``safety_scale`` below 1, compare mode (``return_original=True``), redirection scores and negative
    prompts read by the original encoder. Everything else is the parent's: same arguments, same outputs plus
    ``original_images`` and ``redirection_scores``.

    SDXL conditions on the concatenated penultimate hidden states of ``text_encoder`` (CLIP ViT-L/14, 768) and
    ``text_encoder_2`` (OpenCLIP bigG, 1280), and takes its pooled vector from ``text_encoder_2`` alone. Swapping only
    the first encoder therefore leaves 1280 of 2048 dims and the pooled vector untouched (a warning says so).

    Example:
        ```py
        >>> pipe = SaferStableDiffusionXLPipeline.from_pretrained(
        ...     "stabilityai/stable-diffusion-xl-base-1.0",
        ...     safe_text_encoder="path/to/sdxl-export",   # text_encoder/ + text_encoder_2/: both slots
        ...     keep_original=True, dtype=torch.float16).to("cuda")
        >>> out = pipe("a photo of an astronaut", return_original=True)
        ```
    """

    model_cpu_offload_seq = (
        "original_text_encoder->original_text_encoder_2->" + StableDiffusionXLPipeline.model_cpu_offload_seq
    )
    _optional_components = StableDiffusionXLPipeline._optional_components + [
        "original_text_encoder",
        "original_text_encoder_2",
    ]
    __init__ = safer_init(StableDiffusionXLPipeline, ("text_encoder", "text_encoder_2"))
    __call__ = safer_call(StableDiffusionXLPipeline)
