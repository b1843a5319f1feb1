"""Resolve a safe text encoder for one pipeline slot, from whatever form it comes in.

A safe encoder can be given as

- a Hugging Face Hub id or a local directory, in any of three layouts: a bare ``CLIPTextModel`` /
  ``CLIPTextModelWithProjection`` directory; a diffusers-style directory holding ``text_encoder/`` (and, for
  SDXL, ``text_encoder_2/``); or a full ``CLIPModel`` directory such as the released ``Adeely93/SafeR_CLIP``
  and ``aimagelab/safeclip_vit-l_14``, from which the text tower is taken. ``subfolder=`` picks a folder
  (AdvUnlearn's ``nudity_unlearned``);
- a single weights file (``.safetensors``; DES/SAGE ``.pt``, ``.bin`` only with ``allow_pickle=True``);
- an already loaded module.

Weights load from safetensors only; a checkpoint that has nothing but pickle files is refused unless
``allow_pickle=True``, because unpickling can run arbitrary code. Every load is verified: all weights of the
model must come from the checkpoint (see :mod:`.keys`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
from transformers.utils import logging as hf_logging

from ..hub import explain_unavailable, hub_kwargs, is_local, require_local_dir
from .errors import IncompatibleEncoderError, PickleCheckpointError
from .keys import PROJECTION_KEY, tied_groups
from .peers import (
    PICKLE_SUFFIXES,
    WEIGHT_SUFFIXES,
    build_encoder,
    is_clip_class,
    read_weights_file,
    read_weights_folder,
)

DEFAULT_SAFE_TEXT_ENCODER = "Adeely93/SafeR_CLIP"
"""The released SafeR-CLIP weights (a full CLIP ViT-L/14 ``CLIPModel``; licence cc-by-nc-4.0)."""

TRAINING_PROMPTS_FILE = "training_prompts.json"
SLOT_CLASSES: dict[str, type] = {"text_encoder": CLIPTextModel, "text_encoder_2": CLIPTextModelWithProjection}
WHAT = "safe text encoder"


def _hub_configs(spec: str, hub: dict[str, Any], subfolder: str | None) -> Path:
    """A local snapshot of the config files of a Hub repository (a few kB: enough to tell the layout apart)."""
    from huggingface_hub import snapshot_download

    patterns = (
        [f"{subfolder}/config.json"] if subfolder else ["config.json", "*/config.json", "model_index.json"]
    )
    try:
        return Path(snapshot_download(spec, allow_patterns=patterns, **hub))
    except Exception as err:  # noqa: BLE001 - re-raised with what to do
        raise explain_unavailable(
            spec, WHAT, err, offline_alternative="a local directory or weights file"
        ) from err


def _root(spec: str | os.PathLike, hub: dict[str, Any], subfolder: str | None) -> tuple[Path, bool]:
    if is_local(spec):
        return require_local_dir(spec, WHAT), False
    return _hub_configs(str(spec), hub, subfolder), True


def _subfolder_for(root: Path, slot: str) -> str | None:
    """Which folder of ``root`` holds the encoder for ``slot`` (None = the root itself)."""
    if (root / slot / "config.json").is_file():
        return slot
    if (root / "config.json").is_file():
        return None
    found = sorted(p.parent.name for p in root.glob("*/config.json"))
    raise FileNotFoundError(
        f"no text encoder for {slot!r} in {root}: expected {slot}/config.json (diffusers layout) or a "
        f"config.json of a CLIPModel / CLIP text model at the top; found configs in {found or 'no subfolder'}"
    )


def text_config(folder: Path, model_class: type) -> Any:
    """The text-encoder config in ``folder``; a ``CLIPModel`` config gives its text half with its projection width."""
    path = folder / "config.json"
    data = json.loads(path.read_text())
    model_type = data.get("model_type", "")
    if is_clip_class(model_class):
        if model_type == "clip":
            text = dict(data.get("text_config") or data.get("text_config_dict") or {})
            if data.get("projection_dim") is not None:  # the width CLIPModel's text_projection really has
                text["projection_dim"] = data["projection_dim"]
            text.pop("model_type", None)
            return CLIPTextConfig(**text)
        if model_type != "clip_text_model":
            raise IncompatibleEncoderError(
                f"{path} describes a {model_type!r} model, not a CLIP text encoder"
            )
        return CLIPTextConfig.from_pretrained(folder)
    return model_class.config_class.from_pretrained(folder)


def _verify_loading_info(
    model: torch.nn.Module, info: dict, source: str, base: torch.nn.Module | None
) -> None:
    tied = set().union(*tied_groups(model))
    missing = {k for k in info.get("missing_keys", ()) if not k.endswith("position_ids") and k not in tied}
    if missing == {PROJECTION_KEY} and base is not None and hasattr(base, "text_projection"):
        with torch.no_grad():
            model.text_projection.weight.copy_(base.text_projection.weight)
        missing = set()
    problems = []
    if missing:
        hint = (
            " (the checkpoint is a plain CLIPTextModel: pass base= to keep the pipeline's projection)"
            if missing == {PROJECTION_KEY}
            else ""
        )
        problems.append(f"{len(missing)} weights were not in the checkpoint: {sorted(missing)[:6]}{hint}")
    if info.get("mismatched_keys"):
        problems.append(f"shapes differ for {sorted(info['mismatched_keys'])[:6]}")
    if problems:
        raise IncompatibleEncoderError(
            f"{source} does not fit {type(model).__name__}: " + "; ".join(problems)
        )


def slot_class(slot: str) -> type:
    """The default encoder class of a slot (``text_encoder``: CLIPTextModel, ``text_encoder_2``: with projection)."""
    if slot not in SLOT_CLASSES:
        raise ValueError(
            f"unknown text encoder slot {slot!r}; expected one of {sorted(SLOT_CLASSES)}, or pass model_class="
        )
    return SLOT_CLASSES[slot]


def base_module(
    base: Any, model_class: type, hub: dict[str, Any], slot: str | None = None
) -> torch.nn.Module | None:
    """``base`` as a module: given as one, or loaded (safetensors only) from an encoder folder, a pipeline
    folder holding ``slot/`` (e.g. an SDXL base with ``text_encoder_2/``), or a Hub id."""
    if base is None or isinstance(base, torch.nn.Module):
        return base
    kwargs = dict(hub)
    if slot and is_local(base) and (Path(base).expanduser() / slot / "config.json").is_file():
        kwargs["subfolder"] = slot
    return model_class.from_pretrained(base, use_safetensors=True, **kwargs)


def load_safe_text_encoder(
    spec: str | os.PathLike | torch.nn.Module,
    slot: str = "text_encoder",
    *,
    model_class: type | None = None,
    allow_pickle: bool = False,
    torch_dtype: torch.dtype | None = None,
    subfolder: str | None = None,
    base: torch.nn.Module | str | os.PathLike | None = None,
    keep_base_projection: bool = False,
    num_hidden_layers: int | None = None,
    prefix: str | None = None,
    **kwargs: Any,
) -> torch.nn.Module:
    """Load the safe text encoder for ``slot`` (``text_encoder``: CLIP ViT-L/14 class; ``text_encoder_2``: SDXL's bigG).

    ``model_class`` overrides the slot's default class (e.g. ``CLIPTextModelWithProjection`` for SD3's
    ``text_encoder``, ``T5EncoderModel``). ``base`` is the pipeline's own encoder for the slot (module or
    folder): the architecture of a bare weights file, and the projection kept when the checkpoint has none
    (DES bigG) or when ``keep_base_projection`` (SD3's CLIP-L). ``num_hidden_layers`` keeps the first layers
    only (a 24-layer OpenCLIP-H for SD 2.x's 23). ``prefix`` picks one encoder from a multi-encoder file.
    Extra keyword arguments are Hub options (``cache_dir``, ``token``, ``revision``, ``local_files_only``, ...).
    """
    model_class = model_class or slot_class(slot)
    if "dtype" in kwargs:
        if torch_dtype is not None:
            raise ValueError("pass dtype= or torch_dtype=, not both")
        torch_dtype = kwargs.pop("dtype")
    if isinstance(spec, torch.nn.Module):
        if type(spec).__name__.startswith("Peft"):
            raise TypeError("the safe encoder is a peft model: call merge_and_unload() on it first")
        if not isinstance(spec, model_class):
            raise TypeError(
                f"the safe encoder for {slot!r} must be a {model_class.__name__}, got {type(spec).__name__}"
            )
        return spec.to(torch_dtype) if torch_dtype is not None else spec
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(
            f"safe text encoder must be a hub id, a directory, a file or a module, got {type(spec).__name__}"
        )

    hub = hub_kwargs(kwargs)
    base = base_module(base, model_class, hub, slot)
    build = {
        "base": base,
        "keep_base_projection": keep_base_projection,
        "num_hidden_layers": num_hidden_layers,
    }
    if str(spec).lower().endswith(WEIGHT_SUFFIXES) and not Path(spec).expanduser().exists():
        raise FileNotFoundError(f"{WHAT} file does not exist: {str(spec)!r}")
    if Path(spec).expanduser().is_file():
        ckpt = read_weights_file(spec, allow_pickle=allow_pickle)
        encoder = build_encoder(ckpt.tensors, model_class, source=str(ckpt.path), prefix=prefix, **build)
        return encoder.to(torch_dtype) if torch_dtype is not None else encoder

    root, from_hub = _root(spec, hub, subfolder)
    sub = subfolder if subfolder is not None else _subfolder_for(root, slot)
    folder = root / sub if sub else root
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"no config.json in {folder}: not a text encoder folder")
    config = text_config(folder, model_class)
    if num_hidden_layers is not None:
        config.num_hidden_layers = num_hidden_layers
    source = f"{spec}" + (f" ({sub})" if sub else "")
    if not from_hub and not any(p.name.endswith(".safetensors") for p in folder.iterdir()):
        ckpt = read_weights_folder(folder, allow_pickle=allow_pickle)  # refuses unless allow_pickle
        encoder = build_encoder(
            ckpt.tensors, model_class, source=str(ckpt.path), config=config, prefix=prefix, **build
        )
        return encoder.to(torch_dtype) if torch_dtype is not None else encoder

    load_kwargs: dict[str, Any] = {"config": config, "output_loading_info": True}
    if torch_dtype is not None:
        load_kwargs["dtype"] = torch_dtype
    if from_hub:
        load_kwargs.update(hub)
        if sub:
            load_kwargs["subfolder"] = sub
        target: str | Path = str(spec)
    else:
        target = folder
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # a CLIPModel checkpoint's vision weights are "unexpected" by design
    try:
        model, info = model_class.from_pretrained(
            target, use_safetensors=True if not allow_pickle else None, weights_only=True, **load_kwargs
        )
    except OSError as err:
        if from_hub and not allow_pickle and "safetensors" in str(err):
            raise PickleCheckpointError(
                f"{spec!r} has no safetensors weights for {slot!r} (only pickle files such as pytorch_model.bin); "
                "pickle weights are refused. Pass allow_pickle=True if you trust its source."
            ) from err
        if from_hub:
            raise explain_unavailable(
                spec, WHAT, err, offline_alternative="a local directory or weights file"
            ) from err
        raise
    finally:
        hf_logging.set_verbosity(verbosity)
    _verify_loading_info(model, info, source, base)
    if keep_base_projection:
        if base is None or not hasattr(base, "text_projection") or not hasattr(model, "text_projection"):
            raise IncompatibleEncoderError(
                "keep_base_projection=True needs a model_class with a projection and base= with one (SD3's CLIP-L)"
            )
        with torch.no_grad():
            model.text_projection.weight.copy_(base.text_projection.weight)
    return model.eval()


def has_slot(spec: Any, slot: str, **kwargs: Any) -> bool:
    """Whether ``spec`` (an id or directory) holds a diffusers-style ``slot`` folder, e.g. ``text_encoder_2``."""
    if not isinstance(spec, (str, os.PathLike)) or Path(spec).expanduser().is_file():
        return False
    try:
        root, _ = _root(spec, hub_kwargs(kwargs), None)
    except (OSError, ValueError):
        return False
    return (root / slot / "config.json").is_file()


def read_training_prompts(spec: Any, **kwargs: Any) -> dict[str, list[str]] | None:
    """The prompts a training export recorded (``{"unsafe": [...], "safe": [...]}``), or None if it has none."""
    if not isinstance(spec, (str, os.PathLike)):
        return None
    path = Path(spec).expanduser() / TRAINING_PROMPTS_FILE
    if not path.is_file():
        if is_local(spec):
            return None
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(str(spec), TRAINING_PROMPTS_FILE, **hub_kwargs(kwargs)))
        except Exception:  # noqa: BLE001 - most released encoders do not record their prompts
            return None
    data = json.loads(path.read_text())
    return {k: [str(p) for p in data.get(k, [])] for k in ("unsafe", "safe")}


__all__ = [
    "DEFAULT_SAFE_TEXT_ENCODER",
    "PICKLE_SUFFIXES",
    "SLOT_CLASSES",
    "TRAINING_PROMPTS_FILE",
    "has_slot",
    "load_safe_text_encoder",
    "read_training_prompts",
    "text_config",
]
