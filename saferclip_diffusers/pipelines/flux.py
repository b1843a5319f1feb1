"""``SaferFluxPipeline``: FLUX.1 with a safe CLIP-L (pooled) and optionally a safe T5 (token sequence)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from diffusers import FluxPipeline, FluxTransformer2DModel
from diffusers.image_processor import PipelineImageInput
from transformers import (
    CLIPTextModel,
    T5EncoderModel,
)

from ..encoders import DEFAULT_SAFE_TEXT_ENCODER, IncompatibleEncoderError
from .call_options import split_call_locals
from .loading import DEFAULT
from .mmdit import SaferMMDiTMixin, token_mean
from .mmdit_loading import load_mmdit_pipeline, mmdit_from_pipe
from .signatures import safer_init


class SaferFluxPipeline(SaferMMDiTMixin, FluxPipeline):
    r"""FLUX.1 whose text encoders are safe encoders.

    FLUX conditions its transformer on the **T5** token sequence (``text_encoder_2``, 512 tokens) and modulates it with
    the **CLIP-L** pooled vector (``text_encoder``, ``pooler_output``, unprojected). A safe CLIP-L alone therefore changes
    only the 768-d pooled vector and leaves every token the transformer attends to untouched (a warning says so);
    full text coverage needs a safe T5 too (``safe_text_encoder_2``: a folder, a ``.safetensors`` state dict or a
    ``T5EncoderModel``).

    FLUX.1 runs without classifier-free guidance (guidance is distilled into the transformer): negative prompts
    have no effect unless ``true_cfg_scale > 1``. The safe encoders act on the prompt itself, so they still work
    where negative prompts and guidance-based methods (SLD) cannot.

    Example:
        ```py
        >>> pipe = SaferFluxPipeline.from_pretrained(
        ...     "black-forest-labs/FLUX.1-dev", safe_text_encoder="Adeely93/SafeR_CLIP",
        ...     safe_text_encoder_2="path/to/safe_t5.safetensors", keep_original=True, dtype=torch.bfloat16)
        >>> out = pipe("a photo of an astronaut", return_original=True)
        ```
    """

    model_cpu_offload_seq = "original_text_encoder->original_text_encoder_2->text_encoder->text_encoder_2->image_encoder->transformer->vae"
    _optional_components = FluxPipeline._optional_components + [
        "original_text_encoder",
        "original_text_encoder_2",
    ]
    _slots = (("text_encoder", "tokenizer", "clip"), ("text_encoder_2", "tokenizer_2", "t5"))
    _slot_classes = {"text_encoder": CLIPTextModel, "text_encoder_2": T5EncoderModel}
    _default_safe_encoders = {"text_encoder": DEFAULT_SAFE_TEXT_ENCODER}
    _offline_alternative = (
        "the tiny offline models (preset 'tiny-flux', or saferclip_diffusers.tiny.tiny_model_dir('flux'))"
    )
    _transformer_class = FluxTransformer2DModel
    _keep_base_projection = ()  # FLUX reads CLIP's unprojected pooler_output

    __init__ = safer_init(FluxPipeline, ("text_encoder", "text_encoder_2"))

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        safe_text_encoder: Any = DEFAULT,
        safe_text_encoder_2: Any = DEFAULT,
        *,
        keep_original: bool = False,
        allow_pickle: bool = False,
        **kwargs: Any,
    ) -> SaferFluxPipeline:
        """Load a base FLUX.1 pipeline (hub id or folder) and swap in safe encoders.

        Args:
            safe_text_encoder: CLIP-L slot (a ``CLIPTextModel``): hub id, folder or module. Default: SafeR-CLIP.
                ``None`` keeps the base encoder.
            safe_text_encoder_2: T5 slot: folder (``T5EncoderModel``, or an export holding one), a single
                ``.safetensors`` state dict (read into the base's T5 config; every weight must be present) or a
                ``T5EncoderModel``. By default taken from an export's ``text_encoder_2/`` when that holds a T5.
            keep_original, allow_pickle, **kwargs: as in :meth:`SaferStableDiffusion3Pipeline.from_pretrained`.
        """
        specs = {"text_encoder": safe_text_encoder, "text_encoder_2": safe_text_encoder_2}
        return load_mmdit_pipeline(
            cls,
            pretrained_model_name_or_path,
            specs,
            keep_original=keep_original,
            allow_pickle=allow_pickle,
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
        **kwargs: Any,
    ) -> SaferFluxPipeline:
        """Wrap a loaded FLUX pipeline; transformer, VAE, scheduler and tokenizers are shared, not copied."""
        specs = {"text_encoder": safe_text_encoder, "text_encoder_2": safe_text_encoder_2}
        return mmdit_from_pipe(
            cls, pipeline, specs, keep_original=keep_original, allow_pickle=allow_pickle, kwargs=kwargs
        )

    # ------------------------------------------------------------------ hooks of the shared loader and mixin

    @staticmethod
    def _check_base(transformer_config: dict, configs: dict) -> None:
        if (
            "text_encoder" in configs
            and configs["text_encoder"].hidden_size != transformer_config["pooled_projection_dim"]
        ):
            raise IncompatibleEncoderError("the base pipeline's CLIP width does not match its transformer")
        if (
            "text_encoder_2" in configs
            and configs["text_encoder_2"].d_model != transformer_config["joint_attention_dim"]
        ):
            raise IncompatibleEncoderError("the base pipeline's T5 width does not match its transformer")

    def coverage_warnings(self) -> list[str]:
        slots = self.safe_slots
        if not slots:
            return [
                f"{type(self).__name__} has no safe text encoder: it generates exactly like the base pipeline."
            ]
        if "text_encoder_2" not in slots:
            return [
                "Only FLUX's CLIP-L is safe: it supplies the pooled modulation vector, but every token the "
                "transformer attends to comes from the original T5 (text_encoder_2), so an unsafe prompt still "
                "reaches it. Pass safe_text_encoder_2=... (a safe T5) for token-level protection."
            ]
        if "text_encoder" not in slots:
            return [
                "Only FLUX's T5 is safe: the pooled vector still comes from the original CLIP-L (text_encoder)."
            ]
        return []

    def _uses_cfg(self, args: dict) -> bool:
        has_negative = args.get("negative_prompt") is not None or (
            args.get("negative_prompt_embeds") is not None
            and args.get("negative_pooled_prompt_embeds") is not None
        )
        return args["true_cfg_scale"] > 1 and has_negative

    def _encode_branch(self, prompts: list[str], args: dict, cfg: bool) -> dict[str, torch.Tensor]:
        attention = args.get("joint_attention_kwargs")
        common = dict(
            device=self._execution_device,
            num_images_per_prompt=args.get("num_images_per_prompt") or 1,
            max_sequence_length=args.get("max_sequence_length", 512),
            lora_scale=attention.get("scale") if attention else None,
        )
        embeds, pooled, _ = self.encode_prompt(prompt=prompts, prompt_2=args.get("prompt_2"), **common)
        out = {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}
        if cfg:
            negative, negative_2 = args.get("negative_prompt"), args.get("negative_prompt_2")
            negative = [negative] * len(prompts) if isinstance(negative, str) else negative
            negative_2 = [negative_2] * len(prompts) if isinstance(negative_2, str) else negative_2
            neg, neg_pooled, _ = self.encode_prompt(
                prompt=negative,
                prompt_2=negative_2,
                prompt_embeds=args.get("negative_prompt_embeds"),
                pooled_prompt_embeds=args.get("negative_pooled_prompt_embeds"),
                **common,
            )
            out.update(negative_prompt_embeds=neg, negative_pooled_prompt_embeds=neg_pooled)
        return out

    def _slot_features(self, embeds: dict, prompts: list[str], args: dict) -> dict[str, torch.Tensor]:
        t5 = token_mean(
            embeds["prompt_embeds"],
            self.tokenizer_2,
            args.get("prompt_2"),
            prompts,
            args.get("num_images_per_prompt") or 1,
        )
        return {"text_encoder": embeds["pooled_prompt_embeds"], "text_encoder_2": t5}

    def _initial_latents(self, batch: int, args: dict, dtype: torch.dtype) -> torch.Tensor:
        height, width = self._default_size(args)
        latents, _ = self.prepare_latents(
            batch,
            self.transformer.config.in_channels // 4,
            height,
            width,
            dtype,
            self._execution_device,
            args.get("generator"),
        )
        return latents

    # ------------------------------------------------------------------ __call__

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] = None,
        prompt_2: str | list[str] | None = None,
        negative_prompt: str | list[str] = None,
        negative_prompt_2: str | list[str] | None = None,
        true_cfg_scale: float = 1.0,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 28,
        sigmas: list[float] | None = None,
        guidance_scale: float = 3.5,
        num_images_per_prompt: int | None = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.FloatTensor | None = None,
        prompt_embeds: torch.FloatTensor | None = None,
        pooled_prompt_embeds: torch.FloatTensor | None = None,
        ip_adapter_image: PipelineImageInput | None = None,
        ip_adapter_image_embeds: list[torch.Tensor] | None = None,
        negative_ip_adapter_image: PipelineImageInput | None = None,
        negative_ip_adapter_image_embeds: list[torch.Tensor] | None = None,
        negative_prompt_embeds: torch.FloatTensor | None = None,
        negative_pooled_prompt_embeds: torch.FloatTensor | None = None,
        output_type: str | None = "pil",
        return_dict: bool = True,
        joint_attention_kwargs: dict[str, Any] | None = None,
        callback_on_step_end: Callable[[int, int], None] | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],  # noqa: B006 - diffusers' own default
        max_sequence_length: int = 512,
        *,
        safety_scale: float = 1.0,
        return_original: bool = False,
        compare_in_one_batch: bool = True,
        negative_prompt_encoder: str = "original",
    ):
        r"""Generate with the safe encoders. Every parameter before ``safety_scale`` is ``FluxPipeline.__call__``'s,
        in its order and with its defaults.

        Args:
            safety_scale: the T5 sequence and the CLIP pooled vector interpolated between the original encoders (0)
                and the safe ones (1). 0 reproduces the plain diffusers pipeline exactly.
            return_original: also generate with the original encoders from the very same initial (packed) latents,
                sharing the transformer; the output carries ``original_images``.
            compare_in_one_batch: both branches in one transformer batch ``[safe | original]``; ``False`` runs them one
                after the other (lower peak memory).
            negative_prompt_encoder: which encoders read a negative prompt you write (used only with
                ``true_cfg_scale > 1``): ``"original"`` (default; keeps its meaning; without ``keep_original=True``
                the safe ones read it, with a warning) or ``"safe"`` (blended by ``safety_scale``).

        Returns:
            :class:`SaferPipelineOutput` (or a tuple ``(images[, original_images])``).
        """
        args, options = split_call_locals(locals())
        return self._safer_call(args, **options)
