"""``from_pretrained`` / ``from_pipe`` for the SD 1.x/2.x and SDXL Safer pipelines: swap safe encoders into their
slots.

Validation runs before any heavy weight moves: the UNet, tokenizer and original text-encoder configs are
read (a few kB), the safe encoders are loaded and checked against them, and only then does diffusers load
the UNet and VAE.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from .. import _compat
from ..encoders import (
    SLOT_CLASSES,
    IncompatibleEncoderError,
    SlotExpectation,
    check_encoder,
    load_safe_text_encoder,
)
from ..hub import hub_kwargs
from .loading import add_original, load_original_encoder, normalise_dtype, read_base_index, resolve_specs


def _expectations(unet_config: dict, tokenizers: dict, encoder_configs: dict) -> dict[str, SlotExpectation]:
    """What each slot needs, from the UNet config, the tokenizers and the original encoders' configs."""
    cross = unet_config["cross_attention_dim"]
    cross = cross[0] if isinstance(cross, (list, tuple)) else cross
    slots = list(encoder_configs)
    out = {}
    for slot in slots:
        cfg = encoder_configs[slot]
        hidden = cfg.hidden_size
        if len(slots) == 1 and hidden != cross:
            raise IncompatibleEncoderError(
                f"the base pipeline's own {slot} (hidden size {hidden}) does not match its UNet ({cross})"
            )
        projection = None
        if slot == "text_encoder_2":
            projection = unet_config.get("projection_class_embeddings_input_dim")
            time_dims = unet_config.get("addition_time_embed_dim") or 0
            projection = projection - 6 * time_dims if projection else cfg.projection_dim
        tok = tokenizers[slot]
        out[slot] = SlotExpectation(
            slot=slot,
            hidden_size=hidden,
            vocab_size=len(tok),
            eos_token_id=tok.eos_token_id,
            max_length=tok.model_max_length,
            projection_dim=projection,
        )
    if len(slots) == 2 and sum(e.hidden_size for e in out.values()) != cross:
        raise IncompatibleEncoderError(
            f"the base pipeline's text encoders do not add up to its UNet's {cross} dims"
        )
    return out


def load_safer_pipeline(
    cls,
    base: str | os.PathLike,
    specs: dict[str, Any],
    *,
    keep_original: bool,
    allow_pickle: bool,
    use_xformers: bool | None,
    kwargs: dict[str, Any],
):
    from diffusers import DiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTokenizer

    hub = hub_kwargs(kwargs)
    torch_dtype = normalise_dtype(kwargs)
    base, index = read_base_index(cls, base, hub)
    saved_slots = index.get(
        "safe_text_encoder_slots"
    )  # present in every saved Safer pipeline, whatever its class
    specs = resolve_specs(cls, specs, saved_slots)

    # -- cheap reads first: configs and tokenizers
    slot_names = [slot for slot, _ in cls._slots]
    unet_config = UNet2DConditionModel.load_config(base, subfolder="unet", **hub)
    tokenizers = {slot: CLIPTokenizer.from_pretrained(base, subfolder=tok, **hub) for slot, tok in cls._slots}
    enc_cfgs = {slot: CLIPTextConfig.from_pretrained(base, subfolder=slot, **hub) for slot in slot_names}
    expected = _expectations(unet_config, tokenizers, enc_cfgs)

    components: dict[str, Any] = {tok: tokenizers[slot] for slot, tok in cls._slots}
    safe_slots: list[str] = []
    for slot in slot_names:
        spec = specs.get(slot)
        if spec is not None:
            encoder = load_safe_text_encoder(
                spec, slot, allow_pickle=allow_pickle, torch_dtype=torch_dtype, **hub
            )
            check_encoder(encoder, expected[slot])
            components[slot] = encoder
            safe_slots.append(slot)
        elif saved_slots and slot in saved_slots:
            safe_slots.append(slot)  # diffusers loads the saved safe encoder from the directory itself

    for slot in slot_names:
        add_original(
            components,
            base,
            index,
            slot,
            safe=slot in safe_slots,
            keep_original=keep_original,
            load=lambda slot=slot: load_original_encoder(
                base, slot, SLOT_CLASSES[slot], allow_pickle, torch_dtype, hub
            ),
        )
    if not allow_pickle:
        kwargs.setdefault("use_safetensors", True)
    # DiffusionPipeline's loader itself: a user subclass must not re-enter the Safer from_pretrained
    pipe = DiffusionPipeline.from_pretrained.__func__(
        cls, base, **components, safe_text_encoder_slots=safe_slots, **kwargs
    )
    _finish(pipe, use_xformers)
    return pipe


def pipe_from_pipe(
    cls,
    pipeline,
    specs: dict[str, Any],
    *,
    keep_original: bool,
    allow_pickle: bool,
    use_xformers: bool | None,
    kwargs: dict[str, Any],
):
    source_safe = list(pipeline.safe_slots) if hasattr(pipeline, "safe_slots") else None
    specs = resolve_specs(cls, specs, source_safe)
    normalise_dtype(kwargs, default=pipeline.dtype)  # diffusers would otherwise cast shared modules to fp32
    slot_names = [slot for slot, _ in cls._slots]
    encoder_configs = {}
    for slot in slot_names:
        original = (
            pipeline.original_encoder(slot) if source_safe is not None else getattr(pipeline, slot, None)
        )
        if original is None and source_safe is not None:
            original = getattr(pipeline, slot)  # only its safe encoder is known: check against that
        if original is None:
            raise ValueError(f"the source pipeline has no {slot}")
        encoder_configs[slot] = original.config
    tokenizers = {slot: getattr(pipeline, tok) for slot, tok in cls._slots}
    expected = _expectations(dict(pipeline.unet.config), tokenizers, encoder_configs)

    components: dict[str, Any] = {}
    safe_slots: list[str] = []
    for slot in slot_names:
        spec = specs.get(slot)
        source_original = (
            pipeline.original_encoder(slot) if source_safe is not None else getattr(pipeline, slot)
        )
        if spec is not None:
            encoder = load_safe_text_encoder(
                spec, slot, allow_pickle=allow_pickle, torch_dtype=kwargs["dtype"], **hub_kwargs(kwargs)
            )
            check_encoder(encoder, expected[slot])
            components[slot] = encoder.to(pipeline.device)
            safe_slots.append(slot)
            components[f"original_{slot}"] = source_original if keep_original else None
        elif source_safe is not None and slot in source_safe:
            safe_slots.append(slot)
            components[slot] = getattr(pipeline, slot)
            components[f"original_{slot}"] = source_original if keep_original else None
        else:
            components[slot] = getattr(pipeline, slot)
            components[f"original_{slot}"] = None
    for key in list(kwargs):
        if key in hub_kwargs(kwargs):
            kwargs.pop(key)
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pipe.__func__(
        cls, pipeline, **components, safe_text_encoder_slots=safe_slots, **kwargs
    )
    _finish(pipe, use_xformers)
    return pipe


def _finish(pipe, use_xformers: bool | None) -> None:
    _compat.configure_attention(pipe, use_xformers)
    slots = pipe.safe_slots
    if not slots:
        warnings.warn(
            f"{type(pipe).__name__} has no safe text encoder: it generates exactly like the base pipeline.",
            UserWarning,
            stacklevel=3,
        )
    elif "text_encoder_2" in dict(pipe._slots) and "text_encoder_2" not in slots:
        warnings.warn(
            "Only SDXL's first text encoder (CLIP ViT-L/14) is safe. The pooled vector and 1280 of the 2048 "
            "conditioning dimensions still come from the original OpenCLIP bigG encoder (text_encoder_2), so "
            "protection is partial. Pass safe_text_encoder_2=... (e.g. a SafeR-CLIP bigG export) for both.",
            UserWarning,
            stacklevel=3,
        )
