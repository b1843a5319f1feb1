"""``SaferStableDiffusion3Pipeline``: SD 3 / 3.5 with safe CLIP-L, CLIP-G and (optionally) T5 encoders."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from diffusers import (
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)
from diffusers.image_processor import PipelineImageInput
from transformers import (
    CLIPTextModelWithProjection,
    T5EncoderModel,
)

from ..encoders import DEFAULT_SAFE_TEXT_ENCODER, IncompatibleEncoderError
from .call_options import split_call_locals
from .loading import DEFAULT
from .mmdit import SaferMMDiTMixin, token_mean
from .mmdit_loading import load_mmdit_pipeline, mmdit_from_pipe
from .signatures import safer_init


class SaferStableDiffusion3Pipeline(SaferMMDiTMixin, StableDiffusion3Pipeline):
    r"""Stable Diffusion 3 / 3.5 whose text encoders are safe encoders.

    SD3 conditions its transformer on ``[CLIP tokens ; T5 tokens]``: the CLIP part is CLIP-L's and CLIP-G's
    penultimate hidden states side by side (77 tokens, 768 + 1280, zero-padded to T5's 4096), followed by 256 (up to
    512) T5 tokens; the pooled vector is ``[CLIP-L text_embeds ; CLIP-G text_embeds]`` (2048). Safe slots:

    - ``text_encoder`` (CLIP-L, with projection): the safe tower is used with **SD3's own** ``text_projection``
      (SD3's CLIP-L projection is not OpenAI's; the safe weights replace ``text_model`` only).
    - ``text_encoder_2`` (CLIP-G, with projection): an SDXL export's bigG (``text_encoder_2/``) fits as is.
    - ``text_encoder_3`` (T5), three honest options: **keep** it (a warning says most of the conditioning still
      comes from it), **drop** it with ``text_encoder_3=None`` (diffusers then feeds zeros: every token comes from
      the safe CLIP encoders, at a cost in prompt following and text rendering), or a **safe T5** via
      ``safe_text_encoder_3`` (a folder, a single ``.safetensors`` state dict, or a ``T5EncoderModel``).

    Example:
        ```py
        >>> pipe = SaferStableDiffusion3Pipeline.from_pretrained(
        ...     "stabilityai/stable-diffusion-3.5-medium",
        ...     safe_text_encoder="path/to/sd3-export",  # text_encoder/ (+ text_encoder_2/, text_encoder_3/)
        ...     keep_original=True, dtype=torch.bfloat16).to("cuda")
        >>> out = pipe("a photo of an astronaut", return_original=True)
        ```
    """

    model_cpu_offload_seq = (
        "original_text_encoder->original_text_encoder_2->original_text_encoder_3->"
        "text_encoder->text_encoder_2->text_encoder_3->image_encoder->transformer->vae"
    )
    _optional_components = StableDiffusion3Pipeline._optional_components + [
        "text_encoder_3",
        "tokenizer_3",
        "original_text_encoder",
        "original_text_encoder_2",
        "original_text_encoder_3",
    ]
    _slots = (
        ("text_encoder", "tokenizer", "clip"),
        ("text_encoder_2", "tokenizer_2", "clip"),
        ("text_encoder_3", "tokenizer_3", "t5"),
    )
    _slot_classes = {
        "text_encoder": CLIPTextModelWithProjection,
        "text_encoder_2": CLIPTextModelWithProjection,
        "text_encoder_3": T5EncoderModel,
    }
    _default_safe_encoders = {"text_encoder": DEFAULT_SAFE_TEXT_ENCODER}
    _offline_alternative = (
        "the tiny offline models (preset 'tiny-sd3', or saferclip_diffusers.tiny.tiny_model_dir('sd3'))"
    )
    _transformer_class = SD3Transformer2DModel
    _keep_base_projection = ("text_encoder",)  # SD3's CLIP-L projection is not OpenAI's: keep the base's

    __init__ = safer_init(StableDiffusion3Pipeline, ("text_encoder", "text_encoder_2", "text_encoder_3"))

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        safe_text_encoder: Any = DEFAULT,
        safe_text_encoder_2: Any = DEFAULT,
        safe_text_encoder_3: Any = DEFAULT,
        *,
        keep_original: bool = False,
        allow_pickle: bool = False,
        **kwargs: Any,
    ) -> SaferStableDiffusion3Pipeline:
        """Load a base SD3 pipeline (hub id or folder) and swap in safe encoders.

        Args:
            safe_text_encoder: CLIP-L slot: hub id, folder (bare CLIP text model, diffusers layout, or a full
                ``CLIPModel`` such as SafeR-CLIP) or a loaded ``CLIPTextModelWithProjection``. Default: SafeR-CLIP.
                ``None`` keeps the base encoder.
            safe_text_encoder_2: CLIP-G slot; by default taken from ``safe_text_encoder`` when that is a
                diffusers-layout export holding ``text_encoder_2/`` (an SDXL export's bigG fits), else kept.
            safe_text_encoder_3: T5 slot (folder, ``.safetensors`` file or ``T5EncoderModel``); by default taken from
                an export's ``text_encoder_3/``, else the base T5 is kept (with a warning). To drop T5 instead, pass
                ``text_encoder_3=None`` (diffusers' own option; both branches then run without T5).
            keep_original: also load the base encoders of swapped slots (``safety_scale < 1``, compare mode,
                redirection scores, ``negative_prompt_encoder="original"``).
            allow_pickle: accept pickle-only checkpoints (they can run code when loaded).
            **kwargs: passed to ``DiffusionPipeline.from_pretrained`` (``dtype``, ``variant``, ``text_encoder_3``...).
        """
        specs = {
            "text_encoder": safe_text_encoder,
            "text_encoder_2": safe_text_encoder_2,
            "text_encoder_3": safe_text_encoder_3,
        }
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
        safe_text_encoder_3: Any = DEFAULT,
        *,
        keep_original: bool = True,
        allow_pickle: bool = False,
        **kwargs: Any,
    ) -> SaferStableDiffusion3Pipeline:
        """Wrap a loaded SD3 pipeline; transformer, VAE, scheduler and tokenizers are shared, not copied."""
        specs = {
            "text_encoder": safe_text_encoder,
            "text_encoder_2": safe_text_encoder_2,
            "text_encoder_3": safe_text_encoder_3,
        }
        return mmdit_from_pipe(
            cls, pipeline, specs, keep_original=keep_original, allow_pickle=allow_pickle, kwargs=kwargs
        )

    # ------------------------------------------------------------------ hooks of the shared loader and mixin

    @staticmethod
    def _check_base(transformer_config: dict, configs: dict) -> None:
        if (
            "text_encoder_3" in configs
            and configs["text_encoder_3"].d_model != transformer_config["joint_attention_dim"]
        ):
            raise IncompatibleEncoderError("the base pipeline's T5 width does not match its transformer")
        pooled = sum(configs[s].projection_dim for s in ("text_encoder", "text_encoder_2"))
        if pooled != transformer_config["pooled_projection_dim"]:
            raise IncompatibleEncoderError(
                "the base pipeline's CLIP projections do not add up to its pooled width"
            )

    def coverage_warnings(self) -> list[str]:
        slots = self.safe_slots
        if not slots:
            return [
                f"{type(self).__name__} has no safe text encoder: it generates exactly like the base pipeline."
            ]
        warnings = []
        if self.text_encoder_3 is not None and "text_encoder_3" not in slots:
            warnings.append(
                "SD3's T5 (text_encoder_3) is not swapped: most of the conditioning (all T5 token positions, and every "
                "channel beyond CLIP's 2048) still comes from the original T5, so an unsafe prompt still reaches the "
                "transformer through it. Pass safe_text_encoder_3=... (a safe T5), or text_encoder_3=None to drop "
                "T5 (lower prompt fidelity)."
            )
        missing = [s for s in ("text_encoder", "text_encoder_2") if s not in slots]
        if missing:
            warnings.append(
                f"SD3's {' and '.join(missing)} (CLIP) still come from the original model: their tokens "
                "and their half of the pooled vector are unprotected."
            )
        return warnings

    def _uses_cfg(self, args: dict) -> bool:
        return args["guidance_scale"] > 1

    def _encode_branch(self, prompts: list[str], args: dict, cfg: bool) -> dict[str, torch.Tensor]:
        attention = args.get("joint_attention_kwargs")
        embeds, negative, pooled, negative_pooled = self.encode_prompt(
            prompt=prompts,
            prompt_2=args.get("prompt_2"),
            prompt_3=args.get("prompt_3"),
            device=self._execution_device,
            num_images_per_prompt=args.get("num_images_per_prompt") or 1,
            do_classifier_free_guidance=cfg,
            negative_prompt=args.get("negative_prompt"),
            negative_prompt_2=args.get("negative_prompt_2"),
            negative_prompt_3=args.get("negative_prompt_3"),
            negative_prompt_embeds=args.get("negative_prompt_embeds"),
            negative_pooled_prompt_embeds=args.get("negative_pooled_prompt_embeds"),
            clip_skip=args.get("clip_skip"),
            max_sequence_length=args.get("max_sequence_length", 256),
            lora_scale=attention.get("scale") if attention else None,
        )
        out = {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}
        if cfg:
            out.update(negative_prompt_embeds=negative, negative_pooled_prompt_embeds=negative_pooled)
        return out

    def _slot_features(self, embeds: dict, prompts: list[str], args: dict) -> dict[str, torch.Tensor]:
        width_l = self.text_encoder.config.projection_dim
        pooled = embeds["pooled_prompt_embeds"]
        features = {"text_encoder": pooled[:, :width_l], "text_encoder_2": pooled[:, width_l:]}
        if "text_encoder_3" in self.safe_slots:  # a dropped T5 (text_encoder_3=None) is never a safe slot
            features["text_encoder_3"] = token_mean(
                embeds["prompt_embeds"][:, self.tokenizer_max_length :],
                self.tokenizer_3,
                args.get("prompt_3"),
                prompts,
                args.get("num_images_per_prompt") or 1,
            )
        return features

    def _initial_latents(self, batch: int, args: dict, dtype: torch.dtype) -> torch.Tensor:
        height, width = self._default_size(args)
        return self.prepare_latents(
            batch,
            self.transformer.config.in_channels,
            height,
            width,
            dtype,
            self._execution_device,
            args.get("generator"),
        )

    # ------------------------------------------------------------------ __call__

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] = None,
        prompt_2: str | list[str] | None = None,
        prompt_3: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 28,
        sigmas: list[float] | None = None,
        guidance_scale: float = 7.0,
        negative_prompt: str | list[str] | None = None,
        negative_prompt_2: str | list[str] | None = None,
        negative_prompt_3: str | list[str] | None = None,
        num_images_per_prompt: int | None = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.FloatTensor | None = None,
        prompt_embeds: torch.FloatTensor | None = None,
        negative_prompt_embeds: torch.FloatTensor | None = None,
        pooled_prompt_embeds: torch.FloatTensor | None = None,
        negative_pooled_prompt_embeds: torch.FloatTensor | None = None,
        ip_adapter_image: PipelineImageInput | None = None,
        ip_adapter_image_embeds: torch.Tensor | None = None,
        output_type: str | None = "pil",
        return_dict: bool = True,
        joint_attention_kwargs: dict[str, Any] | None = None,
        clip_skip: int | None = None,
        callback_on_step_end: Callable[[int, int], None] | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],  # noqa: B006 - diffusers' own default
        max_sequence_length: int = 256,
        skip_guidance_layers: list[int] = None,
        skip_layer_guidance_scale: float = 2.8,
        skip_layer_guidance_stop: float = 0.2,
        skip_layer_guidance_start: float = 0.01,
        mu: float | None = None,
        *,
        safety_scale: float = 1.0,
        return_original: bool = False,
        compare_in_one_batch: bool = True,
        negative_prompt_encoder: str = "original",
    ):
        r"""Generate with the safe encoders. Every parameter before ``safety_scale`` is
        ``StableDiffusion3Pipeline.__call__``'s, in its order and with its defaults.

        Args:
            safety_scale: every conditioning tensor (sequence and pooled) interpolated between the original encoders
                (0) and the safe ones (1). 0 reproduces the plain diffusers pipeline exactly.
            return_original: also generate with the original encoders from the very same initial latents, sharing the
                transformer; the output carries ``original_images``.
            compare_in_one_batch: both branches in one transformer batch (faster); ``False`` runs them one after the
                other (lower peak memory). In one batch a callback sees ``[safe | original]`` (each with CFG's
                ``[negative | positive]`` layout inside the parent's own concatenation).
            negative_prompt_encoder: which encoders read a negative prompt you write. ``"original"`` (default): the
                original ones, so that "nudity, gore" keeps its meaning as a second defence instead of being
                redirected (without ``keep_original=True`` the safe ones read it, with a warning). ``"safe"``: the
                safe ones, blended by ``safety_scale``. The unconditional side (no negative written) always follows
                the prompt's encoders.

        Returns:
            :class:`SaferPipelineOutput` (or a tuple ``(images[, original_images])``).
        """
        args, options = split_call_locals(locals())
        return self._safer_call(args, **options)
