"""Does an encoder fit a pipeline slot? Checked from configs alone, before any heavy weight moves.

What each slot consumes (diffusers 0.42; spec modern-pipelines-uwm-des.md section 3.2):

- SD 1.x/2.x ``text_encoder`` and SDXL ``text_encoder``: ``CLIPTextModel`` (its ``[0]`` is the hidden states);
- SDXL / SD3 ``text_encoder_2`` and SD3 ``text_encoder``: ``CLIPTextModelWithProjection`` (``[0]`` is the
  projected pooled vector);
- FLUX ``text_encoder``: ``CLIPTextModel`` (reads ``pooler_output``, which the projection class lacks);
- SD3 ``text_encoder_3`` and FLUX ``text_encoder_2``: ``T5EncoderModel``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import IncompatibleEncoderError


@dataclass(frozen=True)
class SlotExpectation:
    """What a pipeline needs of the encoder in one slot, read from its configs (no weights needed)."""

    slot: str
    hidden_size: int
    vocab_size: int  # the tokenizer's
    eos_token_id: int | None
    max_length: int
    projection_dim: int | None = (
        None  # width of the pooled vector this slot must project to (SDXL/SD3 CLIP-G, SD3 CLIP-L)
    )
    num_hidden_layers: int | None = None  # depth the slot was built with (SD 2.x: 23); None = not checked
    model_class: type | None = None  # the class the pipeline indexes (section 3.2); None = not checked


def check_encoder(encoder: torch.nn.Module, expected: SlotExpectation, name: str = "safe encoder") -> None:
    """Raise :class:`IncompatibleEncoderError` when ``encoder`` cannot stand in ``expected.slot``."""
    cfg = encoder.config
    where = f"{name} for {expected.slot!r}"
    if expected.model_class is not None and not isinstance(encoder, expected.model_class):
        raise IncompatibleEncoderError(
            f"{where} is a {type(encoder).__name__}, but this slot needs a {expected.model_class.__name__}: the "
            "pipeline reads its output by position ([0], pooler_output), and another class returns other tensors "
            "there. Load it with load_safe_text_encoder(..., model_class=...)"
        )
    if cfg.hidden_size != expected.hidden_size:
        raise IncompatibleEncoderError(
            f"{where} has hidden size {cfg.hidden_size}, but the denoiser's cross-attention expects "
            f"{expected.hidden_size} from this slot. A CLIP ViT-L/14 encoder (768) fits SD 1.x and the clip_l slot "
            "of SDXL/SD3/FLUX; SD 2.x needs an OpenCLIP ViT-H/14 encoder (1024); SDXL/SD3's text_encoder_2 needs "
            "bigG (1280)."
        )
    if expected.num_hidden_layers is not None and cfg.num_hidden_layers != expected.num_hidden_layers:
        raise IncompatibleEncoderError(
            f"{where} has {cfg.num_hidden_layers} layers, but this slot's encoder has {expected.num_hidden_layers}: "
            "its output would come from a different depth. A 24-layer OpenCLIP-H tower fits SD 2.x when loaded "
            "with num_hidden_layers=23 (diffusers drops the last block)."
        )
    if expected.projection_dim is not None:
        if not hasattr(encoder, "text_projection"):
            raise IncompatibleEncoderError(
                f"{where} has no text projection: this slot (SDXL/SD3 text_encoder_2, SD3 text_encoder) must be a "
                "CLIPTextModelWithProjection, whose projected pooled text_embeds condition the denoiser"
            )
        if cfg.projection_dim != expected.projection_dim:
            raise IncompatibleEncoderError(
                f"{where} projects to {cfg.projection_dim} dims, but the denoiser expects a pooled vector of "
                f"{expected.projection_dim}"
            )
    if cfg.vocab_size < expected.vocab_size:
        raise IncompatibleEncoderError(
            f"{where} has a vocabulary of {cfg.vocab_size} tokens, but the pipeline's tokenizer produces ids up to "
            f"{expected.vocab_size - 1}: the encoder was trained with a different tokenizer"
        )
    if expected.eos_token_id is not None and cfg.eos_token_id not in (expected.eos_token_id, 2):
        raise IncompatibleEncoderError(
            f"{where} pools at token id {cfg.eos_token_id}, but the tokenizer's end-of-text id is "
            f"{expected.eos_token_id}: the pooled embedding would be read at the wrong position"
        )
    positions = getattr(cfg, "max_position_embeddings", None)  # T5 has relative positions: no limit to check
    if positions is not None and positions < expected.max_length:
        raise IncompatibleEncoderError(
            f"{where} holds {positions} positions, but the tokenizer pads to {expected.max_length}"
        )
