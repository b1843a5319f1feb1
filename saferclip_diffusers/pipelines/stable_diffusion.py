"""``SaferStableDiffusionPipeline``: Stable Diffusion 1.x / 2.x text-to-image with safe text encoder(s) (see :mod:`.conditioning`)."""

from __future__ import annotations

from diffusers import StableDiffusionPipeline

from .base import SaferSDMixin
from .signatures import safer_call, safer_init


class SaferStableDiffusionPipeline(SaferSDMixin, StableDiffusionPipeline):
    r"""Stable Diffusion 1.x / 2.x text-to-image (:class:`diffusers.StableDiffusionPipeline`) whose text-encoder slot(s) hold safe encoders.

    ``original_<slot>`` holds the base model's encoder when kept (``keep_original=True``, or ``from_pipe``); it
    enables ``safety_scale`` below 1, compare mode (``return_original=True``), redirection scores and negative
    prompts read by the original encoder. Everything else is the parent's: same arguments, same outputs plus
    ``original_images`` and ``redirection_scores``.

    Example:
        ```py
        >>> pipe = SaferStableDiffusionPipeline.from_pretrained(
        ...     "stable-diffusion-v1-5/stable-diffusion-v1-5", safe_text_encoder="Adeely93/SafeR_CLIP",
        ...     keep_original=True, dtype=torch.float16).to("cuda")
        >>> out = pipe("a photo of an astronaut", return_original=True)
        >>> out.images[0], out.original_images[0], out.redirection_scores
        ```
    """

    model_cpu_offload_seq = "original_text_encoder->" + StableDiffusionPipeline.model_cpu_offload_seq
    _optional_components = StableDiffusionPipeline._optional_components + ["original_text_encoder"]
    __init__ = safer_init(StableDiffusionPipeline, ("text_encoder",))
    __call__ = safer_call(StableDiffusionPipeline)
