"""``SaferStableDiffusionXLPipeline``: SDXL with safe encoders in either or both text-encoder slots."""

from __future__ import annotations

import os
from typing import Any

import torch
from diffusers import AutoencoderKL, StableDiffusionXLPipeline, UNet2DConditionModel
from diffusers.schedulers import KarrasDiffusionSchedulers
from transformers import (
    CLIPImageProcessor,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionModelWithProjection,
)

from ..encoders import DEFAULT_SAFE_TEXT_ENCODER
from .conditioning import SaferPipelineMixin, encode_text
from .loading import DEFAULT, load_safer_pipeline, pipe_from_pipe


class SaferStableDiffusionXLPipeline(SaferPipelineMixin, StableDiffusionXLPipeline):
    r"""SDXL whose text encoders are safe encoders.

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
        "original_text_encoder->original_text_encoder_2->text_encoder->text_encoder_2->image_encoder->unet->vae"
    )
    _optional_components = StableDiffusionXLPipeline._optional_components + [
        "original_text_encoder",
        "original_text_encoder_2",
    ]
    _slots = (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2"))
    _default_safe_encoders = {"text_encoder": DEFAULT_SAFE_TEXT_ENCODER, "text_encoder_2": None}
    _encoding_kwargs = ("prompt_2", "negative_prompt", "negative_prompt_2", "clip_skip")

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        text_encoder_2: CLIPTextModelWithProjection,
        tokenizer: CLIPTokenizer,
        tokenizer_2: CLIPTokenizer,
        unet: UNet2DConditionModel,
        scheduler: KarrasDiffusionSchedulers,
        image_encoder: CLIPVisionModelWithProjection = None,
        feature_extractor: CLIPImageProcessor = None,
        force_zeros_for_empty_prompt: bool = True,
        add_watermarker: bool | None = None,
        original_text_encoder: CLIPTextModel | None = None,
        original_text_encoder_2: CLIPTextModelWithProjection | None = None,
        safe_text_encoder_slots: list[str] | None = None,
    ):
        super().__init__(
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            tokenizer=tokenizer,
            tokenizer_2=tokenizer_2,
            unet=unet,
            scheduler=scheduler,
            image_encoder=image_encoder,
            feature_extractor=feature_extractor,
            force_zeros_for_empty_prompt=force_zeros_for_empty_prompt,
            add_watermarker=add_watermarker,
        )
        self.register_modules(original_text_encoder=original_text_encoder, original_text_encoder_2=original_text_encoder_2)
        self.register_to_config(safe_text_encoder_slots=list(safe_text_encoder_slots or []))

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
    ) -> SaferStableDiffusionXLPipeline:
        """Load a base SDXL pipeline and swap in safe encoders.

        Args:
            safe_text_encoder: the CLIP ViT-L/14 slot (default: the released SafeR-CLIP weights; ``None`` keeps it).
            safe_text_encoder_2: the bigG slot, a ``CLIPTextModelWithProjection``. By default it is taken from
                ``safe_text_encoder`` when that is a diffusers-layout export holding ``text_encoder_2/``; else kept.
            keep_original, allow_pickle, use_xformers, **kwargs: as in
                :meth:`SaferStableDiffusionPipeline.from_pretrained`.
        """
        specs = {"text_encoder": safe_text_encoder, "text_encoder_2": safe_text_encoder_2}
        return load_safer_pipeline(cls, pretrained_model_name_or_path, specs, keep_original=keep_original,
                                   allow_pickle=allow_pickle, use_xformers=use_xformers, kwargs=kwargs)

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
    ) -> SaferStableDiffusionXLPipeline:
        """Wrap a loaded SDXL pipeline; UNet, VAE, scheduler and tokenizers are shared, not copied."""
        specs = {"text_encoder": safe_text_encoder, "text_encoder_2": safe_text_encoder_2}
        return pipe_from_pipe(cls, pipeline, specs, keep_original=keep_original, allow_pickle=allow_pickle,
                              use_xformers=use_xformers, kwargs=kwargs)

    def _conditioning(self, prompts, encoders, cfg, encode_kwargs):
        """SDXL: penultimate hidden states of both encoders, concatenated; pooled vector of ``text_encoder_2``."""
        device = self._execution_device
        dtype = encoders["text_encoder_2"].dtype
        prompts_2 = _as_batch(encode_kwargs.get("prompt_2"), len(prompts)) or prompts
        clip_skip = encode_kwargs.get("clip_skip")
        pos = {
            slot: encode_text(getattr(self, tok), encoders[slot], batch, layer="penultimate", clip_skip=clip_skip, device=device)
            for (slot, tok), batch in zip(self._slots, (prompts, prompts_2), strict=True)
        }
        hidden = torch.cat([pos["text_encoder"].hidden, pos["text_encoder_2"].hidden], dim=-1).to(dtype)
        embeds = {"prompt_embeds": hidden, "pooled_prompt_embeds": pos["text_encoder_2"].pooled.to(dtype)}
        if cfg:
            negative = encode_kwargs.get("negative_prompt")
            if negative is None and self.config.force_zeros_for_empty_prompt:
                embeds["negative_prompt_embeds"] = torch.zeros_like(hidden)
                embeds["negative_pooled_prompt_embeds"] = torch.zeros_like(embeds["pooled_prompt_embeds"])
            else:
                negatives = _as_batch(negative, len(prompts)) or [""] * len(prompts)
                negatives_2 = _as_batch(encode_kwargs.get("negative_prompt_2"), len(prompts)) or negatives
                neg = {
                    slot: encode_text(getattr(self, tok), encoders[slot], batch, layer="penultimate",
                                      max_length=hidden.shape[1], device=device)
                    for (slot, tok), batch in zip(self._slots, (negatives, negatives_2), strict=True)
                }
                embeds["negative_prompt_embeds"] = torch.cat(
                    [neg["text_encoder"].hidden, neg["text_encoder_2"].hidden], dim=-1).to(dtype)
                embeds["negative_pooled_prompt_embeds"] = neg["text_encoder_2"].pooled.to(dtype)
        return embeds, {slot: pos[slot].pooled for slot, _ in self._slots}

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
        r"""Generate with the safe encoder(s); every argument of ``StableDiffusionXLPipeline.__call__`` is accepted.

        ``safety_scale``, ``return_original`` and ``compare_in_one_batch`` are as in
        :meth:`SaferStableDiffusionPipeline.__call__`; the pooled embeddings are interpolated too.
        """
        return self._call(prompt, safety_scale, return_original, compare_in_one_batch, kwargs)


def _as_batch(value, batch: int) -> list[str] | None:
    if not value:  # None or "" fall back, as diffusers does with `prompt_2 or prompt`
        return None
    if isinstance(value, str):
        return [value] * batch
    if len(value) != batch:
        raise ValueError(f"got {len(value)} entries for {batch} prompts")
    return list(value)
