"""``from_pretrained`` / ``from_pipe`` for the Safer pipelines: swap safe encoders into their slots.

Validation runs before any heavy weight moves: the UNet, tokenizer and original text-encoder configs are
read (a few kB), the safe encoders are loaded and checked against them, and only then does diffusers load
the UNet and VAE.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from .. import _compat
from ..devices import parse_dtype
from ..encoders import (
    SLOT_CLASSES,
    IncompatibleEncoderError,
    SlotExpectation,
    check_encoder,
    has_slot,
    load_safe_text_encoder,
)
from ..hub import explain_unavailable, hub_kwargs, is_local, require_local_dir


class _Default:
    """Marker for "use the default safe encoder of this slot"."""

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT = _Default()


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


def _export_holds(spec: Any, slot: str, kind: str) -> bool:
    """Whether ``spec`` is a diffusers-layout export whose ``slot`` folder holds an encoder of ``kind``
    (``clip`` or ``t5``)."""
    if spec is DEFAULT or spec is None or not isinstance(spec, (str, os.PathLike)):
        return False
    config = Path(spec).expanduser() / slot / "config.json"
    if config.is_file():
        return (json.loads(config.read_text()).get("model_type") == "t5") == (kind == "t5")
    return not Path(spec).expanduser().exists() and has_slot(spec, slot)


def resolve_specs(cls, specs: dict[str, Any], saved_safe_slots: list[str] | None) -> dict[str, Any]:
    """Replace DEFAULT markers: a saved Safer pipeline keeps its own safe encoders; otherwise the class default
    for ``text_encoder``, and for every other slot the first spec when it is a diffusers-layout export that also
    holds this slot with the right kind of encoder (an SDXL export fills both SDXL slots)."""
    first = specs.get("text_encoder")
    kinds = {entry[0]: entry[2] if len(entry) > 2 else "clip" for entry in cls._slots}
    resolved = {}
    for slot, spec in specs.items():
        if spec is DEFAULT:
            if saved_safe_slots is not None:
                spec = None
            elif slot != "text_encoder":
                spec = first if _export_holds(first, slot, kinds[slot]) else None
            else:
                spec = cls._default_safe_encoders.get(slot)
        resolved[slot] = spec
    return resolved


def normalise_dtype(kwargs: dict[str, Any], default: Any = None) -> Any:
    """Accept ``dtype`` (diffusers >= 0.42, transformers 5) and the deprecated ``torch_dtype``; store ``dtype``."""
    dtype, torch_dtype = kwargs.pop("dtype", None), kwargs.pop("torch_dtype", None)
    if dtype is not None and torch_dtype is not None:
        raise ValueError("pass dtype (or the deprecated torch_dtype), not both")
    dtype = dtype if dtype is not None else torch_dtype if torch_dtype is not None else default
    if isinstance(
        dtype, str
    ):  # "float16", "bf16", "auto" (= the modules' own dtype), as on the command lines
        dtype = parse_dtype(dtype)
    if dtype is not None:
        kwargs["dtype"] = dtype
    return dtype


def read_base_index(cls, base: str | os.PathLike, hub: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The base pipeline's location and ``model_index.json``; a clear error when it is not a pipeline folder or
    cannot be had (a path that does not exist is a missing folder, never a Hub error)."""
    if not isinstance(base, (str, os.PathLike)):
        raise TypeError(f"base must be a hub id or a directory, got {type(base).__name__}")
    if is_local(base):
        base = str(require_local_dir(base, "base pipeline"))
        if not os.path.isfile(os.path.join(base, "model_index.json")):
            raise FileNotFoundError(
                f"base pipeline folder {base!r} has no model_index.json: give the folder of a "
                "diffusers pipeline (save_pretrained output)"
            )
    try:
        return str(base), cls.load_config(base, **hub)
    except OSError as err:
        raise explain_unavailable(
            str(base), "base pipeline", err, offline_alternative=cls._offline_alternative
        ) from err


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
        name = f"original_{slot}"
        if slot not in safe_slots or not keep_original:
            components[name] = None
        elif saved_slots is None:  # a plain base: its own encoder in this slot is the original
            components[name] = load_original_encoder(
                base, slot, SLOT_CLASSES[slot], allow_pickle, torch_dtype, hub
            )
        elif not (index.get(name) or [None])[0]:  # a saved Safer pipeline loads original_<slot>/ itself
            raise ValueError(
                f"{base} was saved without its original encoder ({name}/), so keep_original=True cannot be honoured: "
                "save the pipeline after loading it with keep_original=True, or pass a plain base pipeline."
            )
    if not allow_pickle:
        kwargs.setdefault("use_safetensors", True)
    # DiffusionPipeline's loader itself: a user subclass must not re-enter the Safer from_pretrained
    pipe = DiffusionPipeline.from_pretrained.__func__(
        cls, base, **components, safe_text_encoder_slots=safe_slots, **kwargs
    )
    _finish(pipe, use_xformers)
    return pipe


def load_original_encoder(base: str, slot: str, model_class, allow_pickle: bool, dtype, hub: dict):
    """The base pipeline's own encoder of ``slot`` in eval mode: safetensors only, or with ``allow_pickle``
    safetensors where present and pickle weights otherwise."""
    extra = {"dtype": dtype} if dtype is not None else {}
    return model_class.from_pretrained(
        base, subfolder=slot, use_safetensors=None if allow_pickle else True, **hub, **extra
    ).eval()


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
