"""``SaferStableDiffusionControlNetPipeline``: Stable Diffusion 1.x / 2.x ControlNet text-to-image with safe text encoder(s) (see :mod:`.conditioning`).

The ControlNet reads the prompt conditioning too, so it sees the safe (or blended) embeddings, exactly as the
denoiser does. The condition image is a channel no text-encoder swap covers.
"""

from __future__ import annotations

from diffusers import StableDiffusionControlNetPipeline

from .base import SaferSDMixin
from .controlnet_common import SaferControlNetMixin
from .signatures import safer_call, safer_init


class SaferStableDiffusionControlNetPipeline(
    SaferControlNetMixin, SaferSDMixin, StableDiffusionControlNetPipeline
):
    r"""Stable Diffusion 1.x / 2.x ControlNet text-to-image (:class:`diffusers.StableDiffusionControlNetPipeline`) whose text-encoder slot(s) hold safe encoders.

    Load with ``from_pretrained(base, controlnet=ControlNetModel.from_pretrained(...), safe_text_encoder=...)``
    or ``from_pipe(pipe, controlnet=...)``. Compare mode in one batch doubles a per-prompt list (or batch) of
    condition images with the prompts; with a MultiControlNet it runs two passes.
    """

    model_cpu_offload_seq = (
        "original_text_encoder->" + StableDiffusionControlNetPipeline.model_cpu_offload_seq
    )
    _optional_components = StableDiffusionControlNetPipeline._optional_components + ["original_text_encoder"]
    __init__ = safer_init(StableDiffusionControlNetPipeline, ("text_encoder",))
    __call__ = safer_call(StableDiffusionControlNetPipeline)
