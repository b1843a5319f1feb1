"""``SaferStableDiffusionPipeline``: Stable Diffusion 1.x / 2.x with a safe CLIP text encoder."""

from __future__ import annotations

import os
from typing import Any

import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from diffusers.schedulers import KarrasDiffusionSchedulers
from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

from ..encoders import DEFAULT_SAFE_TEXT_ENCODER
from .conditioning import EncodedText, SaferPipelineMixin, encode_text
from .loading import DEFAULT, load_safer_pipeline, pipe_from_pipe


class SaferStableDiffusionPipeline(SaferPipelineMixin, StableDiffusionPipeline):
    r"""Stable Diffusion whose ``text_encoder`` is a safe (SafeR-CLIP) encoder.

    ``text_encoder`` holds the safe encoder, so everything the parent does conditions on it.
    ``original_text_encoder`` holds the base model's encoder when kept (``keep_original=True``, or ``from_pipe``);
    it enables ``safety_scale`` below 1, compare mode (``return_original=True``) and the redirection score.

    Example:
        ```py
        >>> pipe = SaferStableDiffusionPipeline.from_pretrained(
        ...     "stable-diffusion-v1-5/stable-diffusion-v1-5", safe_text_encoder="Adeely93/SafeR_CLIP",
        ...     keep_original=True, dtype=torch.float16).to("cuda")
        >>> out = pipe("a photo of an astronaut", return_original=True)
        >>> out.images[0], out.original_images[0], out.redirection_scores
        ```
    """

    model_cpu_offload_seq = "original_text_encoder->text_encoder->image_encoder->unet->vae"
    _optional_components = StableDiffusionPipeline._optional_components + ["original_text_encoder"]
    _slots = (("text_encoder", "tokenizer"),)
    _default_safe_encoders = {"text_encoder": DEFAULT_SAFE_TEXT_ENCODER}
    _encoding_kwargs = ("negative_prompt", "clip_skip")

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        scheduler: KarrasDiffusionSchedulers,
        safety_checker: StableDiffusionSafetyChecker,
        feature_extractor: CLIPImageProcessor,
        image_encoder: CLIPVisionModelWithProjection = None,
        requires_safety_checker: bool = True,
        original_text_encoder: CLIPTextModel | None = None,
        safe_text_encoder_slots: list[str] | None = None,
    ):
        super().__init__(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=safety_checker,
            feature_extractor=feature_extractor,
            image_encoder=image_encoder,
            requires_safety_checker=requires_safety_checker,
        )
        self.register_modules(original_text_encoder=original_text_encoder)
        self.register_to_config(safe_text_encoder_slots=list(safe_text_encoder_slots or []))

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
    ) -> SaferStableDiffusionPipeline:
        """Load a base SD pipeline (hub id or directory) and swap in ``safe_text_encoder``.

        Args:
            pretrained_model_name_or_path: the base pipeline, or a saved Safer pipeline (which keeps its own safe
                encoder unless ``safe_text_encoder`` is given).
            safe_text_encoder: hub id, local directory (bare CLIP text model, diffusers layout with
                ``text_encoder/``, or a full ``CLIPModel``) or loaded ``CLIPTextModel``. Default: the released
                SafeR-CLIP weights (``Adeely93/SafeR_CLIP``). ``None`` keeps the base encoder.
            keep_original: also load the base encoder, for ``safety_scale < 1``, compare mode and redirection scores.
            allow_pickle: accept checkpoints that only have pickle weights (they can run code when loaded).
            use_xformers: ``None`` enables xformers only where CUDA and xformers are both present.
            **kwargs: passed to ``DiffusionPipeline.from_pretrained`` (``dtype``, ``variant``, ...).
        """
        return load_safer_pipeline(cls, pretrained_model_name_or_path, {"text_encoder": safe_text_encoder},
                                   keep_original=keep_original, allow_pickle=allow_pickle,
                                   use_xformers=use_xformers, kwargs=kwargs)

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
    ) -> SaferStableDiffusionPipeline:
        """Wrap a loaded pipeline; UNet, VAE, scheduler and tokenizer are shared, not copied.

        The source pipeline's encoder becomes ``original_text_encoder`` (free: it is already in memory).
        """
        return pipe_from_pipe(cls, pipeline, {"text_encoder": safe_text_encoder}, keep_original=keep_original,
                              allow_pickle=allow_pickle, use_xformers=use_xformers, kwargs=kwargs)

    def _conditioning(self, prompts, encoders, cfg, encode_kwargs):
        """SD 1.x/2.x: the final-layer hidden states; the negative prompt ignores ``clip_skip``, as in diffusers."""
        encoder = encoders["text_encoder"]
        device = self._execution_device
        pos: EncodedText = encode_text(self.tokenizer, encoder, prompts, layer="final",
                                       clip_skip=encode_kwargs.get("clip_skip"), device=device)
        embeds = {"prompt_embeds": pos.hidden.to(encoder.dtype)}
        if cfg:
            negative = encode_kwargs.get("negative_prompt")
            negatives = _negatives(negative, len(prompts))
            neg = encode_text(self.tokenizer, encoder, negatives, layer="final", max_length=pos.hidden.shape[1], device=device)
            embeds["negative_prompt_embeds"] = neg.hidden.to(encoder.dtype)
        return embeds, {"text_encoder": pos.pooled}

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        *,
        safety_scale: float = 1.0,
        return_original: bool = False,
        compare_in_one_batch: bool = True,
        **kwargs: Any,
    ):
        r"""Generate with the safe encoder; every argument of ``StableDiffusionPipeline.__call__`` is accepted.

        Args:
            safety_scale: conditioning interpolated between the original encoder (0) and the safe one (1).
                0 reproduces the plain diffusers pipeline exactly (same generator, same images).
            return_original: also generate with the original encoder from the very same initial latents; the output
                carries ``original_images``.
            compare_in_one_batch: run both through the UNet as one batch (faster); ``False`` runs them one after
                the other (lower peak memory). With an ancestral (stochastic) sampler, per-step noise then differs.

        Returns:
            :class:`SaferPipelineOutput` (or a tuple ``(images, nsfw[, original_images, original_nsfw])``).
        """
        return self._call(prompt, safety_scale, return_original, compare_in_one_batch, kwargs)


def _negatives(negative_prompt, batch: int) -> list[str]:
    if negative_prompt is None:
        return [""] * batch
    if isinstance(negative_prompt, str):
        return [negative_prompt] * batch
    if len(negative_prompt) != batch:
        raise ValueError(f"negative_prompt has {len(negative_prompt)} entries for {batch} prompts")
    return list(negative_prompt)
