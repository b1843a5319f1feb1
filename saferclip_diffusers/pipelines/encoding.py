"""Text-encoding primitives shared by the Safer pipelines, the demo and the attacks: encode prompts exactly as
diffusers' SD / SDXL pipelines do, blend two encodings, and compare them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.utils import logging

logger = logging.get_logger(__name__)


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
    """Row-wise cosine similarity in float32: the redirection score of each prompt."""
    return F.cosine_similarity(original.float(), safe.float(), dim=-1)


def given(value: Any) -> bool:
    """A prompt argument that carries text (not None, not "", not a list of empty strings)."""
    if value is None:
        return False
    if isinstance(value, str):
        return bool(value)
    return any(bool(v) for v in value)
