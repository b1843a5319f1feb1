"""How a Safer pipeline conditions its denoiser: the parent's own ``encode_prompt``, run with the safe and (when
asked) the original encoders in the slots, then blended.

Conventions
    A *slot* is one text-encoder attribute of the diffusers pipeline (``text_encoder``, and for SDXL
    ``text_encoder_2``). In a Safer pipeline the slot holds the **safe** encoder, so the parent pipeline's own
    code conditions the model on it. The original encoder of a swapped slot lives in ``original_<slot>`` and is
    loaded only when asked (``keep_original=True``, or ``from_pipe``, where it is free). A slot that was not
    swapped is its own original.

    ``safety_scale`` s interpolates every conditioning tensor the parent's ``encode_prompt`` returns (hidden
    states, SDXL's pooled vectors) between the original encoders' (s = 0) and the safe encoders' (s = 1):
    ``c = c_orig + s (c_safe - c_orig)``. Because both sides come from diffusers' own ``encode_prompt``, every
    idiom it implements (textual-inversion multi-vector tokens, the text-encoder LoRA scale, ``clip_skip``,
    ``prompt_2``, ``force_zeros_for_empty_prompt``, user-given negative embeddings) holds on both sides.

    Negative prompts: a negative prompt the user writes goes through the **original** encoder by default
    (``negative_prompt_encoder="original"``). The safe encoder maps "nudity, gore" near a safe meaning, so
    encoding the negative prompt with it would weaken negative prompting as a second line of defence. The
    unconditional ("" or zeros) branch always follows the positive prompt's encoder.

    The redirection score of a prompt is ``cos(p_orig, p_safe)`` between the pooled embeddings of the original
    and the safe encoder (SDXL: the lowest over swapped slots). Low means the safe encoder moved the prompt far.
"""

from __future__ import annotations

import inspect
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers.utils import BaseOutput, logging

logger = logging.get_logger(__name__)

PROMPT_ARGS = ("prompt", "prompt_2", "prompt_3")
NEGATIVE_ARGS = ("negative_prompt", "negative_prompt_2", "negative_prompt_3")
NEGATIVE_ENCODERS = ("safe", "original")


@dataclass
class SaferPipelineOutput(BaseOutput):
    """Output of the Safer pipelines.

    Args:
        images: the safe model's images (as the parent pipeline returns them).
        nsfw_content_detected: the parent's safety-checker flags (SD 1.x with a checker), else None.
        original_images: with ``return_original=True``, the original model's images from the same noise.
        original_nsfw_content_detected: the checker flags of ``original_images``.
        redirection_scores: per prompt, cos(original pooled, safe pooled); None when no original encoder is loaded.
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    nsfw_content_detected: list[bool] | None = None
    original_images: list[PIL.Image.Image] | np.ndarray | torch.Tensor | None = None
    original_nsfw_content_detected: list[bool] | None = None
    redirection_scores: list[float] | None = None


@dataclass
class EncodedText:
    """One encoder's output for a batch: what the denoiser reads and the pooled vector."""

    hidden: torch.Tensor  # (B, L, D)
    pooled: torch.Tensor  # (B, P): pooler_output (CLIPTextModel) or text_embeds (with projection)


def encode_text(
    tokenizer,
    text_encoder: torch.nn.Module,
    prompts: list[str],
    *,
    layer: str,
    clip_skip: int | None = None,
    max_length: int | None = None,
    device: torch.device | None = None,
) -> EncodedText:
    """Encode ``prompts`` exactly as diffusers' pipelines do, in one forward pass.

    ``layer="final"`` is SD 1.x/2.x (last hidden state after the final layer norm; ``clip_skip`` k takes layer
    -(k+1) through the final norm); ``layer="penultimate"`` is SDXL (``hidden_states[-(k+2)]``, k=0 by default).
    """
    max_length = max_length or tokenizer.model_max_length
    inputs = tokenizer(
        prompts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt"
    )
    ids = inputs.input_ids
    if tokenizer(prompts, padding="longest", return_tensors="pt").input_ids.shape[-1] > ids.shape[-1]:
        logger.warning(f"Part of a prompt was truncated: CLIP reads at most {max_length} tokens.")
    device = device or text_encoder.device
    mask = None
    if getattr(text_encoder.config, "use_attention_mask", False):
        mask = inputs.attention_mask.to(device)
    want_hidden = layer == "penultimate" or clip_skip is not None
    out = text_encoder(ids.to(device), attention_mask=mask, output_hidden_states=want_hidden)
    if layer == "final":
        hidden = out.last_hidden_state
        if clip_skip is not None:
            # transformers 5 flattened CLIPTextModel (no .text_model); diffusers 0.42's own clip_skip path breaks there
            final_norm = getattr(text_encoder, "text_model", text_encoder).final_layer_norm
            hidden = final_norm(out.hidden_states[-(clip_skip + 1)])
    elif layer == "penultimate":
        hidden = out.hidden_states[-((clip_skip or 0) + 2)]
    else:
        raise ValueError(f"layer must be 'final' or 'penultimate', got {layer!r}")
    pooled = out.text_embeds if hasattr(out, "text_embeds") else out.pooler_output
    return EncodedText(hidden=hidden, pooled=pooled)


def blend(original: torch.Tensor | None, safe: torch.Tensor | None, scale: float) -> torch.Tensor | None:
    """``original + scale * (safe - original)``; exactly ``original`` at 0 and exactly ``safe`` at 1."""
    if scale == 1.0 or original is None:
        return safe
    if scale == 0.0 or safe is None:
        return original
    return torch.lerp(original, safe.to(original.dtype), scale)


def cosine_scores(original: torch.Tensor, safe: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(original.float(), safe.float(), dim=-1)


def given(value: Any) -> bool:
    """A prompt argument that carries text (not None, not "", not a list of empty strings)."""
    if value is None:
        return False
    if isinstance(value, str):
        return bool(value)
    return any(bool(v) for v in value)


@dataclass
class CallState:
    """What the encode hook needs to know about the running ``__call__``."""

    safety_scale: float = 1.0
    negative_prompt_encoder: str = "original"
    split: bool = False  # one-batch compare: first half of the batch safe, second half original


class SaferConditioningMixin:
    """Hooks the parent's ``encode_prompt``; subclasses declare ``_slots`` and ``_encode_outputs``."""

    _slots: tuple[tuple[str, str], ...] = ()  # (encoder slot, tokenizer attribute)
    _encode_outputs: tuple[str, ...] = ("prompt_embeds", "negative_prompt_embeds")  # encode_prompt's tuple
    _clip_skip_shim: bool = (
        False  # SD 1.x/2.x: diffusers' clip_skip needs .text_model, gone in transformers 5
    )
    _safer_state: CallState | None = None

    # ------------------------------------------------------------------ slots

    @property
    def safe_slots(self) -> list[str]:
        return list(self.config.get("safe_text_encoder_slots") or [])

    def original_encoder(self, slot: str) -> torch.nn.Module | None:
        """The original encoder of ``slot``: ``original_<slot>`` if swapped, else the slot's own encoder."""
        if slot in self.safe_slots:
            return getattr(self, f"original_{slot}", None)
        return getattr(self, slot)

    @property
    def has_original(self) -> bool:
        return all(self.original_encoder(slot) is not None for slot in self.safe_slots)

    @contextmanager
    def originals_in_slots(self):
        """Temporarily put the original encoders into their slots (the pipeline config is not touched)."""
        saved = {slot: self.__dict__[slot] for slot in self.safe_slots}
        self.__dict__.update({slot: self.original_encoder(slot) for slot in saved})
        try:
            yield
        finally:
            self.__dict__.update(saved)

    # ------------------------------------------------------------------ the hook

    def encode_prompt(self, *args: Any, **kwargs: Any):
        """The parent's ``encode_prompt``; inside a Safer ``__call__`` it blends safe and original encodings."""
        parent = super().encode_prompt
        state = self._safer_state
        arguments = inspect.signature(parent).bind(*args, **kwargs).arguments
        if state is None or arguments.get("prompt_embeds") is not None:
            return self._parent_encode(parent, arguments)
        if not state.split:
            return self._blended(parent, arguments, state.safety_scale, state.negative_prompt_encoder)
        prompts = arguments["prompt"]
        half = len(prompts) // 2
        first, second = dict(arguments), dict(arguments)
        for name in PROMPT_ARGS + NEGATIVE_ARGS:
            value = arguments.get(name)
            if isinstance(value, list):
                first[name], second[name] = value[:half], value[half:]
        safe = self._blended(parent, first, state.safety_scale, state.negative_prompt_encoder)
        original = self._blended(parent, second, 0.0, "original")
        return tuple(_cat(a, b) for a, b in zip(safe, original, strict=True))

    def _blended(self, parent, arguments: dict, scale: float, negative_encoder: str) -> tuple:
        negatives_given = arguments.get("do_classifier_free_guidance", True) and any(
            given(arguments.get(n)) for n in NEGATIVE_ARGS
        )
        negatives_original = negatives_given and negative_encoder == "original"
        safe = self._parent_encode(parent, arguments) if scale != 0.0 else None
        original = None
        if scale != 1.0 or negatives_original:
            with self.originals_in_slots():
                original = self._parent_encode(parent, arguments)
        if original is None:
            return safe
        if safe is None:
            return original
        names = self._encode_outputs
        return tuple(
            o if (names[i].startswith("negative_") and negatives_original) else blend(o, s, scale)
            for i, (o, s) in enumerate(zip(original, safe, strict=True))
        )

    def _parent_encode(self, parent, arguments: dict) -> tuple:
        clip_skip = arguments.get("clip_skip")
        encoder = getattr(self, "text_encoder", None)
        if (
            self._clip_skip_shim
            and clip_skip is not None
            and arguments.get("prompt_embeds") is None
            and encoder is not None
            and not hasattr(encoder, "text_model")
        ):
            arguments = {
                **arguments,
                "clip_skip": None,
                "prompt_embeds": self._clip_skip_embeds(arguments["prompt"], clip_skip, arguments),
            }
        return tuple(parent(**arguments))

    def _clip_skip_embeds(self, prompt, clip_skip: int, arguments: dict) -> torch.Tensor:
        """diffusers' SD ``clip_skip`` positive embeddings, for transformers 5's flat ``CLIPTextModel``."""
        from diffusers.utils import scale_lora_layers, unscale_lora_layers

        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if hasattr(self, "maybe_convert_prompt"):
            prompts = self.maybe_convert_prompt(prompts, self.tokenizer)
        lora_scale = arguments.get("lora_scale")
        if lora_scale is not None:
            scale_lora_layers(self.text_encoder, lora_scale)
        try:
            return encode_text(
                self.tokenizer,
                self.text_encoder,
                prompts,
                layer="final",
                clip_skip=clip_skip,
                device=arguments.get("device"),
            ).hidden
        finally:
            if lora_scale is not None:
                unscale_lora_layers(self.text_encoder, lora_scale)

    # ------------------------------------------------------------------ redirection score

    @torch.no_grad()
    def redirection_scores(self, prompt: str | list[str]) -> list[float]:
        """cos(original pooled, safe pooled) per prompt, without generating (needs the original encoder)."""
        if not self.has_original:
            raise ValueError(
                "redirection scores need the original text encoder(s): load with keep_original=True"
            )
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        scores = []
        for slot, tok in self._slots:
            if self.safe_slots and slot not in self.safe_slots:
                continue
            tokenizer = getattr(self, tok)
            texts = (
                self.maybe_convert_prompt(prompts, tokenizer)
                if hasattr(self, "maybe_convert_prompt")
                else prompts
            )
            pooled = [
                encode_text(tokenizer, enc, texts, layer="final", device=self._execution_device).pooled
                for enc in (self.original_encoder(slot), getattr(self, slot))
            ]
            scores.append(cosine_scores(*pooled))
        return [float(x) for x in torch.stack(scores).amin(dim=0)]

    def _warn_negative_fallback(self) -> None:
        if not getattr(self, "_warned_negative_fallback", False):
            self._warned_negative_fallback = True
            warnings.warn(
                "negative_prompt_encoder='original' needs the original text encoder, which this pipeline did not "
                "keep: the negative prompt goes through the safe encoder, which weakens it. Load with "
                "keep_original=True, or pass negative_prompt_encoder='safe' to silence this.",
                UserWarning,
                stacklevel=4,
            )


def _cat(a: Any, b: Any) -> Any:
    if a is None or not isinstance(a, torch.Tensor) or a.ndim < 2:
        return a  # None, or a batch-free tensor such as FLUX's text_ids
    return torch.cat([a, b])
