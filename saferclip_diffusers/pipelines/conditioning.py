"""How a Safer pipeline conditions its denoiser: the parent's own ``encode_prompt``, run with the safe and (when
asked) the original encoders in the slots, then blended.

Conventions
    Slots, safe and original encoders: see :mod:`.slots`. In a Safer pipeline each swapped slot holds the
    **safe** encoder, so the parent pipeline's own code conditions the model on it.

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
from dataclasses import dataclass
from typing import Any

import torch

from .call_options import NEGATIVE_ARGS, PROMPT_ARGS
from .encoding import blend, cosine_scores, encode_text, given

__all__ = ["CallState", "SaferConditioningMixin", "blend", "cosine_scores", "encode_text", "given"]


@dataclass
class CallState:
    """What the encode hook needs to know about the running ``__call__``."""

    safety_scale: float = 1.0
    negative_prompt_encoder: str = "original"
    split: bool = False  # one-batch compare: first half of the batch safe, second half original


class SaferConditioningMixin:
    """Hooks the parent's ``encode_prompt`` (slots from :class:`.slots.SaferSlotsMixin`); subclasses declare
    ``_slots`` and ``_encode_outputs``."""

    _slots: tuple[tuple[str, str], ...] = ()  # (encoder slot, tokenizer attribute)
    _encode_outputs: tuple[str, ...] = ("prompt_embeds", "negative_prompt_embeds")  # encode_prompt's tuple
    _clip_skip_shim: bool = (
        False  # SD 1.x/2.x: diffusers' clip_skip needs .text_model, gone in transformers 5
    )
    _safer_state: CallState | None = None

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


def _cat(a: Any, b: Any) -> Any:
    if a is None or not isinstance(a, torch.Tensor) or a.ndim < 2:
        return a  # None, or a batch-free tensor such as FLUX's text_ids
    return torch.cat([a, b])
