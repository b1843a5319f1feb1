"""``from_pretrained`` / ``from_pipe`` for the SD3 and FLUX Safer pipelines: safe CLIP and T5 slots.

Validation runs before the heavy weights move: the transformer, tokenizer and original text-encoder configs are
read (a few kB), the safe encoders are loaded and checked against their slots, and only then does diffusers load
the transformer and the VAE.

Safe encoders are loaded by the encoders package (:func:`load_safe_text_encoder`); :mod:`.safe_t5` adds the
slot check against the pipeline's own encoder and the options a T5 slot needs (its folder, or a file's architecture).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from diffusers import DiffusionPipeline

from ..encoders import load_safe_text_encoder
from ..hub import hub_kwargs
from .loading import (
    DEFAULT,
    add_original,
    load_original_encoder,
    normalise_dtype,
    read_base_index,
    resolve_specs,
)
from .safe_t5 import check_slot, t5_load_options


def _load_safe(
    cls, slot: str, spec: Any, original_config, vocab: int, original, *, allow_pickle: bool, dtype, hub: dict
):
    """Load a safe encoder for ``slot`` with the encoders package, then check it against the slot's original.

    ``original()`` gives the pipeline's own encoder of the slot (loaded on demand): SD3's CLIP-L keeps its
    projection, and a single weights file takes the projection it lacks (DES bigG) from it.
    """
    options: dict[str, Any] = {
        "model_class": cls._slot_classes[slot],
        "allow_pickle": allow_pickle,
        "torch_dtype": dtype,
        **hub,
    }
    is_path = isinstance(spec, (str, os.PathLike))
    if dict((s, k) for s, _, k in cls._slots)[slot] == "t5":
        options.update(t5_load_options(spec, slot, original_config))
    elif is_path and slot in cls._keep_base_projection:
        options.update(base=original(), keep_base_projection=True)
    elif is_path and Path(spec).expanduser().is_file():
        options["base"] = original()
    encoder = load_safe_text_encoder(spec, slot, **options)
    check_slot(encoder.config, original_config, slot, vocab, cls.__name__)
    return encoder


def _config_and_vocab(cls, base, slot: str, tokenizer_attr: str, hub: dict):
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base, subfolder=tokenizer_attr, **hub)
    return AutoConfig.from_pretrained(base, subfolder=slot, **hub), len(tokenizer)


def load_mmdit_pipeline(
    cls,
    base: str | os.PathLike,
    specs: dict[str, Any],
    *,
    keep_original: bool,
    allow_pickle: bool,
    kwargs: dict[str, Any],
):
    hub = hub_kwargs(kwargs)
    dtype = normalise_dtype(kwargs)
    base, index = read_base_index(cls, base, hub)
    saved = index.get(
        "safe_text_encoder_slots"
    )  # a saved Safer pipeline (its _class_name is the diffusers parent)
    explicit = {slot for slot, spec in specs.items() if spec is not DEFAULT and spec is not None}
    specs = resolve_specs(cls, specs, saved)
    transformer_config = cls._transformer_class.load_config(base, subfolder="transformer", **hub)

    components: dict[str, Any] = {}
    configs, vocabs, safe_slots = {}, {}, []
    originals: dict[str, torch.nn.Module] = {}

    def original_of(slot: str) -> torch.nn.Module:  # loaded at most once per slot
        if slot not in originals:
            originals[slot] = load_original_encoder(
                base, slot, cls._slot_classes[slot], allow_pickle, dtype, hub
            )
        return originals[slot]

    for slot, tokenizer_attr, _ in cls._slots:
        dropped = slot in kwargs and kwargs[slot] is None  # diffusers' own idiom, e.g. text_encoder_3=None
        if dropped:
            if slot in explicit:
                raise ValueError(
                    f"{slot}=None drops the slot; a safe encoder for it cannot be given at the same time"
                )
            components[f"original_{slot}"] = None
            continue
        configs[slot], vocabs[slot] = _config_and_vocab(cls, base, slot, tokenizer_attr, hub)
    cls._check_base(transformer_config, configs)

    for slot, _, _ in cls._slots:
        if slot not in configs:
            continue
        spec = specs.get(slot)
        if spec is not None:
            components[slot] = _load_safe(
                cls,
                slot,
                spec,
                configs[slot],
                vocabs[slot],
                lambda s=slot: original_of(s),
                allow_pickle=allow_pickle,
                dtype=dtype,
                hub=hub,
            )
            safe_slots.append(slot)
        elif saved and slot in saved:
            safe_slots.append(slot)  # diffusers loads the saved safe encoder from the directory itself
        add_original(
            components,
            base,
            index,
            slot,
            safe=slot in safe_slots,
            keep_original=keep_original,
            load=lambda slot=slot: original_of(slot),
        )
    if not allow_pickle:
        kwargs.setdefault("use_safetensors", True)
    pipe = DiffusionPipeline.from_pretrained.__func__(
        cls, base, **components, safe_text_encoder_slots=safe_slots, **kwargs
    )
    warn_coverage(pipe)
    return pipe


def mmdit_from_pipe(
    cls, pipeline, specs: dict[str, Any], *, keep_original: bool, allow_pickle: bool, kwargs: dict[str, Any]
):
    source_safe = (
        list(pipeline.config.get("safe_text_encoder_slots") or [])
        if hasattr(pipeline, "safe_slots")
        else None
    )
    specs = resolve_specs(cls, specs, source_safe)
    dtype = normalise_dtype(
        kwargs, default=pipeline.dtype
    )  # diffusers would otherwise cast shared modules to fp32
    hub = hub_kwargs(kwargs)
    components: dict[str, Any] = {}
    safe_slots: list[str] = []
    for slot, tokenizer_attr, _ in cls._slots:
        current = getattr(pipeline, slot, None)
        original = pipeline.original_encoder(slot) if source_safe is not None else current
        spec = specs.get(slot)
        if spec is not None:
            if current is None:
                raise ValueError(
                    f"the source pipeline has no {slot} (it was dropped), so it cannot be made safe"
                )
            reference = (current if original is None else original).config
            encoder = _load_safe(
                cls,
                slot,
                spec,
                reference,
                len(getattr(pipeline, tokenizer_attr)),
                lambda o=original, c=current: c if o is None else o,
                allow_pickle=allow_pickle,
                dtype=dtype,
                hub=hub,
            )
            components[slot] = encoder.to(pipeline.device)
            safe_slots.append(slot)
        elif source_safe is not None and slot in source_safe:
            components[slot] = current
            safe_slots.append(slot)
        else:
            components[slot] = current
        components[f"original_{slot}"] = original if slot in safe_slots and keep_original else None
    for key in hub:
        kwargs.pop(key)
    pipe = DiffusionPipeline.from_pipe.__func__(
        cls, pipeline, **components, safe_text_encoder_slots=safe_slots, **kwargs
    )
    warn_coverage(pipe)
    return pipe


def warn_coverage(pipe) -> None:
    """Say plainly what a partial swap leaves to the original encoders."""
    for message in pipe.coverage_warnings():
        warnings.warn(message, UserWarning, stacklevel=4)
