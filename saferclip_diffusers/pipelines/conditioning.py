"""What the SD and SDXL Safer pipelines share: encoding with original or safe encoders, ``safety_scale``,
compare mode and the redirection score.

Conventions
    A *slot* is one text-encoder attribute of the diffusers pipeline (``text_encoder``, and for SDXL
    ``text_encoder_2``). In a Safer pipeline the slot holds the **safe** encoder, so the parent pipeline's own
    code conditions the UNet on it. The original encoder of a swapped slot lives in ``original_<slot>`` and is
    loaded only when asked (``keep_original=True``, or ``from_pipe``, where it is free), so plain use costs no
    extra memory. A slot that was not swapped is its own original.

    ``safety_scale`` s interpolates every conditioning tensor (hidden states and SDXL's pooled vector) between
    the original encoder's (s = 0) and the safe encoder's (s = 1): ``c = c_orig + s (c_safe - c_orig)``.

    The redirection score of a prompt is ``cos(p_orig, p_safe)`` between the pooled embeddings of the original
    and the safe encoder (SDXL: the lowest over swapped slots). Low means the safe encoder moved the prompt far:
    a zero-cost unsafe-prompt signal.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers.utils import BaseOutput, logging
from diffusers.utils.torch_utils import randn_tensor

logger = logging.get_logger(__name__)


@dataclass
class SaferPipelineOutput(BaseOutput):
    """Output of the Safer pipelines.

    Args:
        images: the safe model's images (as the parent pipeline returns them).
        nsfw_content_detected: the parent's safety-checker flags (SD 1.x with a checker), else None.
        original_images: with ``return_original=True``, the original model's images from the same initial latents.
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
    """One encoder's output for a batch: what the UNet reads and the pooled vector."""

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
    inputs = tokenizer(prompts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")
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
    if scale == 0.0:
        return original
    return torch.lerp(original, safe.to(original.dtype), scale)


def cosine_scores(original: torch.Tensor, safe: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(original.float(), safe.float(), dim=-1)


def _split(value: Any, n: int) -> tuple[Any, Any]:
    """Split a batched output (list, array, tensor or None) into its first ``n`` items and the rest."""
    if value is None:
        return None, None
    return value[:n], value[n:]


class SaferPipelineMixin:
    """Orchestrates ``__call__`` for a diffusers text-to-image pipeline with swapped text encoders.

    Subclasses declare ``_slots`` (encoder slot, tokenizer attribute) and define
    ``_conditioning(prompts, encoders, cfg, encode_kwargs) -> (embedding kwargs, pooled per slot)``, which turns
    prompts into the parent's embedding keyword arguments with the given encoders.
    """

    _slots: tuple[tuple[str, str], ...] = ()  # (encoder slot, tokenizer attribute)
    _embedding_kwargs: tuple[str, ...] = ()  # parent kwargs carrying embeddings
    _encoding_kwargs: tuple[str, ...] = ()  # parent kwargs consumed by the encoding step

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

    # ------------------------------------------------------------------ encoding

    def _encoders(self, which: str) -> dict[str, torch.nn.Module]:
        if which == "safe":
            return {slot: getattr(self, slot) for slot, _ in self._slots}
        return {slot: self.original_encoder(slot) for slot, _ in self._slots}

    def _redirection(self, orig_pooled: dict, safe_pooled: dict) -> list[float]:
        slots = self.safe_slots or [s for s, _ in self._slots]
        scores = torch.stack([cosine_scores(orig_pooled[s], safe_pooled[s]) for s in slots]).amin(dim=0)
        return [float(x) for x in scores]

    # ------------------------------------------------------------------ __call__

    def _uses_cfg(self, guidance_scale: float) -> bool:
        return guidance_scale > 1 and self.unet.config.time_cond_proj_dim is None

    def _default(self, name: str) -> Any:
        return inspect.signature(super().__call__).parameters[name].default

    def _initial_latents(self, batch: int, kwargs: dict, dtype: torch.dtype) -> torch.Tensor:
        """The same noise the parent would draw from the same generator (before scaling by init_noise_sigma)."""
        height = kwargs.get("height") or self.unet.config.sample_size * self.vae_scale_factor
        width = kwargs.get("width") or self.unet.config.sample_size * self.vae_scale_factor
        shape = (batch, self.unet.config.in_channels, int(height) // self.vae_scale_factor, int(width) // self.vae_scale_factor)
        generator = kwargs.get("generator")
        if isinstance(generator, list) and len(generator) != batch:
            raise ValueError(f"{len(generator)} generators given for an effective batch of {batch} images")
        return randn_tensor(shape, generator=generator, device=self._execution_device, dtype=dtype)

    def _run_parent(self, embeds: dict, kwargs: dict) -> Any:
        return super().__call__(prompt=None, **kwargs, **embeds, return_dict=True)

    def _call(self, prompt, safety_scale: float, return_original: bool, compare_in_one_batch: bool, kwargs: dict):
        if not 0.0 <= float(safety_scale) <= 1.0:
            raise ValueError(f"safety_scale must lie in [0, 1] (0 = original encoder, 1 = safe encoder), got {safety_scale}")
        return_dict = kwargs.pop("return_dict", True)
        need_original = safety_scale != 1.0 or return_original
        if need_original and not self.has_original:
            raise ValueError(
                f"safety_scale={safety_scale} / return_original={return_original} need the original text encoder(s), "
                "which this pipeline did not keep: load it with keep_original=True (or build it with from_pipe)."
            )

        if kwargs.get("prompt_embeds") is not None:  # user-made embeddings: nothing to blend or compare
            if need_original:
                raise ValueError("safety_scale and return_original need the prompt text, not prompt_embeds")
            out = self._run_parent({}, kwargs)
            return self._finish(out, None, None, return_dict)
        if prompt is None:
            raise ValueError("give a prompt (a string or a list of strings)")
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        cfg = self._uses_cfg(kwargs.get("guidance_scale", self._default("guidance_scale")))
        encode_kwargs = {k: kwargs.pop(k) for k in self._encoding_kwargs if k in kwargs}

        with torch.no_grad():
            safe, safe_pooled = self._conditioning(prompts, self._encoders("safe"), cfg, encode_kwargs)
            original, orig_pooled = (None, None)
            if self.has_original:
                original, orig_pooled = self._conditioning(prompts, self._encoders("original"), cfg, encode_kwargs)
        scores = self._redirection(orig_pooled, safe_pooled) if original is not None else None
        embeds = {k: blend(original[k] if original else None, v, safety_scale) for k, v in safe.items()}

        if not return_original:
            return self._finish(self._run_parent(embeds, kwargs), None, scores, return_dict)

        per_prompt = kwargs.get("num_images_per_prompt", 1) or 1
        latents = kwargs.pop("latents", None)
        if latents is None:
            latents = self._initial_latents(len(prompts) * per_prompt, kwargs, embeds["prompt_embeds"].dtype)
        if compare_in_one_batch:  # one UNet batch: [safe prompts | original prompts], same noise twice
            both = {k: torch.cat([embeds[k], original[k]]) for k in embeds}
            generator = kwargs.pop("generator", None)
            if isinstance(generator, list):
                generator = generator + generator
            out = self._run_parent(both, {**kwargs, "latents": torch.cat([latents, latents]), "generator": generator})
            n = len(prompts) * per_prompt
            images, original_images = _split(out.images, n)
            nsfw, original_nsfw = _split(getattr(out, "nsfw_content_detected", None), n)
            out_safe = SaferPipelineOutput(images=images, nsfw_content_detected=nsfw)
            out_orig = SaferPipelineOutput(images=original_images, nsfw_content_detected=original_nsfw)
        else:  # two passes, lower peak memory
            out_safe = self._run_parent(embeds, {**kwargs, "latents": latents.clone()})
            out_orig = self._run_parent(original, {**kwargs, "latents": latents.clone()})
        return self._finish(out_safe, out_orig, scores, return_dict)

    def _finish(self, out, out_orig, scores, return_dict: bool):
        result = SaferPipelineOutput(
            images=out.images,
            nsfw_content_detected=getattr(out, "nsfw_content_detected", None),
            original_images=out_orig.images if out_orig is not None else None,
            original_nsfw_content_detected=getattr(out_orig, "nsfw_content_detected", None) if out_orig else None,
            redirection_scores=scores,
        )
        if return_dict:
            return result
        items = (result.images, result.nsfw_content_detected)
        if out_orig is not None:
            items += (result.original_images, result.original_nsfw_content_detected)
        return items

    @torch.no_grad()
    def redirection_scores(self, prompt: str | list[str], **encode_kwargs: Any) -> list[float]:
        """cos(original pooled, safe pooled) per prompt, without generating (needs the original encoder)."""
        if not self.has_original:
            raise ValueError("redirection scores need the original text encoder(s): load with keep_original=True")
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        _, safe = self._conditioning(prompts, self._encoders("safe"), False, dict(encode_kwargs))
        _, orig = self._conditioning(prompts, self._encoders("original"), False, dict(encode_kwargs))
        return self._redirection(orig, safe)
