"""The Safer pipeline base classes: one mechanism (encode hook, ``__call__``, adapters, loaders, saving) for
every SD 1.x/2.x and SDXL variant. A concrete pipeline is a few lines: its diffusers parent, its slots, and the
``__init__`` / ``__call__`` built from the parent's signatures (:mod:`.signatures`)."""

from __future__ import annotations

import os
from typing import Any

from ..encoders import DEFAULT_SAFE_TEXT_ENCODER
from .adapters import SaferAdaptersMixin
from .calling import SaferCallMixin
from .conditioning import SaferConditioningMixin
from .loading import DEFAULT
from .sd_loading import load_safer_pipeline, pipe_from_pipe
from .slots import SaferSlotsMixin

SD_SLOTS = (("text_encoder", "tokenizer"),)
SDXL_SLOTS = (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2"))
SDXL_OUTPUTS = (
    "prompt_embeds",
    "negative_prompt_embeds",
    "pooled_prompt_embeds",
    "negative_pooled_prompt_embeds",
)


class SaferPipelineMixin(SaferCallMixin, SaferAdaptersMixin, SaferConditioningMixin, SaferSlotsMixin):
    """Everything a Safer SD / SDXL pipeline adds to its diffusers parent (list it first among the bases)."""


class SaferSDMixin(SaferPipelineMixin):
    """SD 1.x/2.x family (text-to-image, img2img, inpainting, ControlNet): one ``text_encoder`` slot."""

    _slots = SD_SLOTS
    _default_safe_encoders = {"text_encoder": DEFAULT_SAFE_TEXT_ENCODER}
    _offline_alternative = "the offline preset 'tiny'"
    _clip_skip_shim = True

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        safe_text_encoder: Any = DEFAULT,
        *,
        keep_original: bool = False,
        allow_pickle: bool = False,
        use_xformers: bool | None = None,
        **kwargs: Any,
    ):
        """Load a base pipeline (hub id or directory) and swap in ``safe_text_encoder``.

        Args:
            pretrained_model_name_or_path: the base pipeline, or a saved Safer pipeline (which keeps its own safe
                encoder unless ``safe_text_encoder`` is given).
            safe_text_encoder: hub id, local directory (bare CLIP text model, diffusers layout with
                ``text_encoder/``, or a full ``CLIPModel``) or loaded ``CLIPTextModel``. Default: the released
                SafeR-CLIP weights (``Adeely93/SafeR_CLIP``). ``None`` keeps the base encoder.
            keep_original: also load the base encoder, for ``safety_scale < 1``, compare mode, redirection scores
                and negative prompts read by the original encoder.
            allow_pickle: accept checkpoints that only have pickle weights (they can run code when loaded).
            use_xformers: ``None`` enables xformers only where CUDA and xformers are both present.
            **kwargs: passed to ``DiffusionPipeline.from_pretrained`` (``dtype``, ``variant``, ``controlnet``, ...).
        """
        return load_safer_pipeline(
            cls,
            pretrained_model_name_or_path,
            {"text_encoder": safe_text_encoder},
            keep_original=keep_original,
            allow_pickle=allow_pickle,
            use_xformers=use_xformers,
            kwargs=kwargs,
        )

    @classmethod
    def from_pipe(
        cls,
        pipeline,
        safe_text_encoder: Any = DEFAULT,
        *,
        keep_original: bool = True,
        allow_pickle: bool = False,
        use_xformers: bool | None = None,
        **kwargs: Any,
    ):
        """Wrap a loaded pipeline; UNet, VAE, scheduler and tokenizer are shared, not copied.

        The source pipeline's encoder becomes ``original_text_encoder`` (free: it is already in memory).
        """
        return pipe_from_pipe(
            cls,
            pipeline,
            {"text_encoder": safe_text_encoder},
            keep_original=keep_original,
            allow_pickle=allow_pickle,
            use_xformers=use_xformers,
            kwargs=kwargs,
        )


class SaferSDXLMixin(SaferPipelineMixin):
    """SDXL family: ``text_encoder`` (CLIP ViT-L/14) and ``text_encoder_2`` (OpenCLIP bigG, pooled) slots."""

    _slots = SDXL_SLOTS
    _encode_outputs = SDXL_OUTPUTS
    _default_safe_encoders = {"text_encoder": DEFAULT_SAFE_TEXT_ENCODER, "text_encoder_2": None}
    _offline_alternative = "the offline preset 'tiny-sdxl'"

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        safe_text_encoder: Any = DEFAULT,
        safe_text_encoder_2: Any = DEFAULT,
        *,
        keep_original: bool = False,
        allow_pickle: bool = False,
        use_xformers: bool | None = None,
        **kwargs: Any,
    ):
        """Load a base SDXL pipeline and swap in safe encoders.

        Args:
            safe_text_encoder: the CLIP ViT-L/14 slot (default: the released SafeR-CLIP weights; ``None`` keeps it).
            safe_text_encoder_2: the bigG slot, a ``CLIPTextModelWithProjection``. By default it is taken from
                ``safe_text_encoder`` when that is a diffusers-layout export holding ``text_encoder_2/``; else kept.
            keep_original, allow_pickle, use_xformers, **kwargs: as in
                :meth:`SaferStableDiffusionPipeline.from_pretrained`.
        """
        specs = {"text_encoder": safe_text_encoder, "text_encoder_2": safe_text_encoder_2}
        return load_safer_pipeline(
            cls,
            pretrained_model_name_or_path,
            specs,
            keep_original=keep_original,
            allow_pickle=allow_pickle,
            use_xformers=use_xformers,
            kwargs=kwargs,
        )

    @classmethod
    def from_pipe(
        cls,
        pipeline,
        safe_text_encoder: Any = DEFAULT,
        safe_text_encoder_2: Any = DEFAULT,
        *,
        keep_original: bool = True,
        allow_pickle: bool = False,
        use_xformers: bool | None = None,
        **kwargs: Any,
    ):
        """Wrap a loaded SDXL pipeline; UNet, VAE, scheduler and tokenizers are shared, not copied."""
        specs = {"text_encoder": safe_text_encoder, "text_encoder_2": safe_text_encoder_2}
        return pipe_from_pipe(
            cls,
            pipeline,
            specs,
            keep_original=keep_original,
            allow_pickle=allow_pickle,
            use_xformers=use_xformers,
            kwargs=kwargs,
        )
