"""``from_pretrained`` / ``from_pipe`` for the SD3 and FLUX Safer pipelines: safe CLIP and T5 slots.

Validation runs before any heavy weight moves: the transformer, tokenizer and original text-encoder configs are
read (a few kB), each safe encoder's config (or, for a single safetensors file, its tensor shapes) is checked
against its slot, and only then are the safe weights, the transformer and the VAE loaded.

A safe T5 can be a ``T5EncoderModel`` folder (or a diffusers-layout folder holding one in a subfolder), a single
``.safetensors`` state dict (read into the base pipeline's own T5 config; every weight must be present), or a loaded
module. Pickle files (``.pt``/``.bin``, e.g. DES's ``des_t5.pt``) are refused unless ``allow_pickle=True``.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from ..encoders import (
    PICKLE_SUFFIXES,
    IncompatibleEncoderError,
    PickleCheckpointError,
    has_slot,
    load_safe_text_encoder,
)
from ..hub import explain_unavailable, hub_kwargs, looks_like_path, require_local_dir
from .loading import DEFAULT


def normalise_dtype(kwargs: dict[str, Any], default: Any = None) -> Any:
    """Accept ``dtype`` and the deprecated ``torch_dtype``; store it as ``dtype``."""
    dtype, torch_dtype = kwargs.pop("dtype", None), kwargs.pop("torch_dtype", None)
    if dtype is not None and torch_dtype is not None:
        raise ValueError("pass dtype (or the deprecated torch_dtype), not both")
    dtype = dtype if dtype is not None else torch_dtype if torch_dtype is not None else default
    if dtype is not None:
        kwargs["dtype"] = dtype
    return dtype


# ------------------------------------------------------------------------------------------- checks


def check_slot(config, expected, slot: str, vocab: int, owner: str) -> None:
    """Refuse a safe encoder whose config cannot stand in ``slot`` (whose original has config ``expected``)."""
    where = f"the safe encoder for {owner}'s {slot!r}"
    if getattr(config, "model_type", None) != getattr(expected, "model_type", None):
        raise IncompatibleEncoderError(
            f"{where} is a {config.model_type!r} model, but this slot holds a {expected.model_type!r} encoder"
        )
    width = "d_model" if expected.model_type == "t5" else "hidden_size"
    if getattr(config, width) != getattr(expected, width):
        raise IncompatibleEncoderError(
            f"{where} has {width} {getattr(config, width)}, but the slot's encoder has {getattr(expected, width)}: "
            "it belongs to another model family (CLIP-L 768, CLIP-G/bigG 1280, T5-XXL 4096)"
        )
    if expected.model_type != "t5" and hasattr(expected, "projection_dim") and config.projection_dim != expected.projection_dim:
        raise IncompatibleEncoderError(
            f"{where} projects to {config.projection_dim} dims, but the transformer expects {expected.projection_dim}"
        )
    if config.vocab_size < vocab:
        raise IncompatibleEncoderError(
            f"{where} has a vocabulary of {config.vocab_size} tokens, but the pipeline's tokenizer produces ids up to "
            f"{vocab - 1}: it was trained with another tokenizer"
        )


def _t5_folder(root: Path, slot: str) -> Path:
    """The folder of ``root`` holding a T5 encoder: the root, ``<slot>/``, or the one T5 subfolder."""
    for folder in (root, root / slot):
        cfg = folder / "config.json"
        if cfg.is_file() and json.loads(cfg.read_text()).get("model_type") == "t5":
            return folder
    found = [p.parent for p in sorted(root.glob("*/config.json")) if json.loads(p.read_text()).get("model_type") == "t5"]
    if len(found) == 1:
        return found[0]
    raise FileNotFoundError(
        f"no T5 encoder in {root}: expected a config.json of model_type 't5' at the top, in {slot}/, or in exactly "
        f"one subfolder (found {len(found)})"
    )


def _weights(folder: Path, allow_pickle: bool) -> bool:
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    if any(n.endswith(".safetensors") for n in names):
        return True
    if not any(n.endswith(PICKLE_SUFFIXES) for n in names):
        raise FileNotFoundError(f"no weights in {folder}: expected model.safetensors (found {names})")
    if not allow_pickle:
        raise PickleCheckpointError(f"{folder} has only pickle weights; pass allow_pickle=True if you trust its source")
    return False


def _state_dict_from_file(path: Path, allow_pickle: bool) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if not allow_pickle:
        raise PickleCheckpointError(
            f"{path} is a pickle file, which can run code when loaded: pass allow_pickle=True if you trust its "
            "source, or convert it to safetensors"
        )
    data = torch.load(path, map_location="cpu", weights_only=True)
    return data.get("model_state_dict", data)  # DES / SAGE checkpoints wrap the state dict


def _t5_from_state_dict(state: dict[str, torch.Tensor], config, source: Path):
    from transformers import T5EncoderModel

    with torch.device("meta"):
        model = T5EncoderModel(config)
    tied = set(getattr(model, "_tied_weights_keys", None) or {})
    try:
        result = model.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as err:  # shape mismatches
        raise IncompatibleEncoderError(f"{source} does not fit the pipeline's T5 ({err})") from err
    missing = [k for k in result.missing_keys if k not in tied]
    if missing or result.unexpected_keys:
        raise IncompatibleEncoderError(
            f"{source} is not a T5 encoder state dict for this pipeline: {len(missing)} weights missing "
            f"(e.g. {missing[:3]}), {len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[:3]})"
        )
    model.tie_weights()
    return model.eval()


def load_safe_t5(spec: Any, slot: str, base_config, *, vocab: int, owner: str, allow_pickle: bool,
                 dtype: torch.dtype | None, hub: dict[str, Any]):
    """Load and check a safe T5 for ``slot`` (module, folder, hub id or single weights file)."""
    from transformers import T5Config, T5EncoderModel

    if isinstance(spec, torch.nn.Module):
        if not isinstance(spec, T5EncoderModel):
            raise TypeError(f"the safe encoder for {slot!r} must be a T5EncoderModel, got {type(spec).__name__}")
        check_slot(spec.config, base_config, slot, vocab, owner)
        return spec.to(dtype) if dtype is not None else spec
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"safe T5 must be a path, a hub id or a T5EncoderModel, got {type(spec).__name__}")
    path = Path(spec).expanduser()
    if path.is_file():
        state = _state_dict_from_file(path, allow_pickle)
        shared = state.get("shared.weight", state.get("encoder.embed_tokens.weight"))
        if shared is not None:  # cheap shape check before building the model
            config = T5Config(**{**base_config.to_dict(), "vocab_size": shared.shape[0], "d_model": shared.shape[1]})
            check_slot(config, base_config, slot, vocab, owner)
        model = _t5_from_state_dict(state, base_config, path)
    elif path.is_dir() or looks_like_path(str(spec)):
        if not path.exists():
            raise FileNotFoundError(f"safe T5 encoder file or folder does not exist: {str(spec)!r}")
        folder = _t5_folder(path, slot)
        check_slot(T5Config.from_pretrained(folder), base_config, slot, vocab, owner)
        model = T5EncoderModel.from_pretrained(folder, use_safetensors=_weights(folder, allow_pickle)).eval()
    else:
        try:
            config = T5Config.from_pretrained(str(spec), **hub)
        except OSError as err:
            raise explain_unavailable(str(spec), "safe T5 encoder", err) from err
        check_slot(config, base_config, slot, vocab, owner)
        model = T5EncoderModel.from_pretrained(str(spec), use_safetensors=not allow_pickle or None, **hub).eval()
    return model.to(dtype) if dtype is not None else model


# ------------------------------------------------------------------------------------------- loading


def _export_holds(spec: Any, slot: str, kind: str) -> bool:
    """Whether ``spec`` is a diffusers-layout export whose ``slot`` folder holds an encoder of ``kind``."""
    if spec is DEFAULT or spec is None or not isinstance(spec, (str, os.PathLike)):
        return False
    config = Path(spec).expanduser() / slot / "config.json"
    if config.is_file():
        return (json.loads(config.read_text()).get("model_type") == "t5") == (kind == "t5")
    return not Path(spec).expanduser().exists() and has_slot(spec, slot)


def _resolve(cls, specs: dict[str, Any], saved_slots: list[str] | None) -> dict[str, Any]:
    """DEFAULT: a saved Safer pipeline keeps its own safe encoders; else the class default, or the first spec when
    it is a diffusers-layout export that also holds this slot with the right kind of encoder."""
    first = specs.get("text_encoder")
    kinds = {slot: kind for slot, _, kind in cls._slots}
    resolved = {}
    for slot, spec in specs.items():
        if spec is DEFAULT:
            if saved_slots is not None:
                spec = None
            elif slot != "text_encoder":
                spec = first if _export_holds(first, slot, kinds[slot]) else None
            else:
                spec = cls._default_safe_encoders.get(slot)
        resolved[slot] = spec
    return resolved


def _load_safe(cls, slot: str, spec: Any, original_config, vocab: int, *, allow_pickle: bool, dtype, hub: dict):
    kind = dict((s, k) for s, _, k in cls._slots)[slot]
    if kind == "t5":
        return load_safe_t5(spec, slot, original_config, vocab=vocab, owner=cls.__name__, allow_pickle=allow_pickle,
                            dtype=dtype, hub=hub)
    encoder = load_safe_text_encoder(spec, slot, allow_pickle=allow_pickle, torch_dtype=dtype,
                                     model_class=cls._slot_classes[slot], **hub)
    check_slot(encoder.config, original_config, slot, vocab, cls.__name__)
    return encoder


def _config_and_vocab(cls, base, slot: str, tokenizer_attr: str, hub: dict):
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base, subfolder=tokenizer_attr, **hub)
    return AutoConfig.from_pretrained(base, subfolder=slot, **hub), len(tokenizer)


def load_mmdit_pipeline(cls, base: str | os.PathLike, specs: dict[str, Any], *, keep_original: bool,
                        allow_pickle: bool, kwargs: dict[str, Any]):
    hub = hub_kwargs(kwargs)
    dtype = normalise_dtype(kwargs)
    if not isinstance(base, (str, os.PathLike)):
        raise TypeError(f"base must be a hub id or a directory, got {type(base).__name__}")
    if looks_like_path(str(base)):
        require_local_dir(base, "base pipeline")
    try:
        index = cls.load_config(base, **hub)
    except OSError as err:
        raise explain_unavailable(str(base), "base pipeline", err, offline_alternative=cls._offline_alternative) from err
    saved = index.get("safe_text_encoder_slots") if str(index.get("_class_name", "")).startswith("Safer") else None
    explicit = {slot for slot, spec in specs.items() if spec is not DEFAULT and spec is not None}
    specs = _resolve(cls, specs, saved)
    transformer_config = cls._transformer_class.load_config(base, subfolder="transformer", **hub)

    components: dict[str, Any] = {}
    configs, vocabs, safe_slots = {}, {}, []
    originals: dict[str, torch.nn.Module] = {}

    def original_of(slot: str) -> torch.nn.Module:  # loaded at most once per slot
        if slot not in originals:
            originals[slot] = _load_original(cls, base, slot, dtype, hub)
        return originals[slot]

    for slot, tokenizer_attr, _ in cls._slots:
        dropped = slot in kwargs and kwargs[slot] is None  # diffusers' own idiom, e.g. text_encoder_3=None
        if dropped:
            if slot in explicit:
                raise ValueError(f"{slot}=None drops the slot; a safe encoder for it cannot be given at the same time")
            components[f"original_{slot}"] = None
            continue
        configs[slot], vocabs[slot] = _config_and_vocab(cls, base, slot, tokenizer_attr, hub)
    cls._check_base(transformer_config, configs)

    for slot, _, _ in cls._slots:
        if slot not in configs:
            continue
        spec = specs.get(slot)
        if spec is not None:
            encoder = _load_safe(cls, slot, spec, configs[slot], vocabs[slot], allow_pickle=allow_pickle, dtype=dtype,
                                 hub=hub)
            components[slot] = cls._adapt_safe(slot, encoder, spec, lambda s=slot: original_of(s))
            safe_slots.append(slot)
        elif saved and slot in saved:
            safe_slots.append(slot)  # diffusers loads the saved safe encoder from the directory itself
        name = f"original_{slot}"
        if slot not in safe_slots or not keep_original:
            components[name] = None
        elif saved is None:
            components[name] = original_of(slot)
        elif not (index.get(name) or [None])[0]:
            raise ValueError(
                f"{base} was saved without its original encoder ({name}/), so keep_original=True cannot be honoured: "
                "save the pipeline after loading it with keep_original=True, or pass a plain base pipeline."
            )
    if not allow_pickle:
        kwargs.setdefault("use_safetensors", True)
    pipe = super(cls, cls).from_pretrained(base, **components, safe_text_encoder_slots=safe_slots, **kwargs)
    warn_coverage(pipe)
    return pipe


def _load_original(cls, base, slot: str, dtype, hub: dict):
    model_class = cls._slot_classes[slot]
    extra = {"dtype": dtype} if dtype is not None else {}
    return model_class.from_pretrained(base, subfolder=slot, use_safetensors=True, **hub, **extra).eval()


def mmdit_from_pipe(cls, pipeline, specs: dict[str, Any], *, keep_original: bool, allow_pickle: bool,
                    kwargs: dict[str, Any]):
    source_safe = list(pipeline.config.get("safe_text_encoder_slots") or []) if hasattr(pipeline, "safe_slots") else None
    specs = _resolve(cls, specs, source_safe)
    dtype = normalise_dtype(kwargs, default=pipeline.dtype)  # diffusers would otherwise cast shared modules to fp32
    hub = hub_kwargs(kwargs)
    components: dict[str, Any] = {}
    safe_slots: list[str] = []
    for slot, tokenizer_attr, _ in cls._slots:
        current = getattr(pipeline, slot, None)
        original = pipeline.original_encoder(slot) if source_safe is not None else current
        spec = specs.get(slot)
        if spec is not None:
            if current is None:
                raise ValueError(f"the source pipeline has no {slot} (it was dropped), so it cannot be made safe")
            reference = (current if original is None else original).config
            encoder = _load_safe(cls, slot, spec, reference, len(getattr(pipeline, tokenizer_attr)),
                                 allow_pickle=allow_pickle, dtype=dtype, hub=hub)
            components[slot] = cls._adapt_safe(slot, encoder, spec, lambda o=original, c=current: c if o is None else o).to(pipeline.device)
            safe_slots.append(slot)
        elif source_safe is not None and slot in source_safe:
            components[slot] = current
            safe_slots.append(slot)
        else:
            components[slot] = current
        components[f"original_{slot}"] = original if slot in safe_slots and keep_original else None
    for key in hub:
        kwargs.pop(key)
    pipe = super(cls, cls).from_pipe(pipeline, **components, safe_text_encoder_slots=safe_slots, **kwargs)
    warn_coverage(pipe)
    return pipe


def warn_coverage(pipe) -> None:
    """Say plainly what a partial swap leaves to the original encoders."""
    for message in pipe.coverage_warnings():
        warnings.warn(message, UserWarning, stacklevel=4)
