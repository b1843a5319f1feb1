"""What the SD3 / FLUX loaders add to :func:`~saferclip_diffusers.encoders.load_safe_text_encoder`: the per-slot
shape check against the pipeline's own encoder, and how a T5 slot finds its weights.

A safe T5 can be a ``T5EncoderModel`` folder, a diffusers-layout folder holding one (in the slot's subfolder, or
in the only T5 subfolder, e.g. an SD3 export's ``text_encoder_3/`` for FLUX's ``text_encoder_2``), a single
``.safetensors`` state dict (read into the base pipeline's own T5 config), a hub id, or a loaded module. Pickle
files (DES's ``des_t5.pt``) load only with ``allow_pickle=True``; the encoders package enforces that.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..encoders import IncompatibleEncoderError


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
    if (
        expected.model_type != "t5"
        and hasattr(expected, "projection_dim")
        and config.projection_dim != expected.projection_dim
    ):
        raise IncompatibleEncoderError(
            f"{where} projects to {config.projection_dim} dims, but the transformer expects {expected.projection_dim}"
        )
    if config.vocab_size < vocab:
        raise IncompatibleEncoderError(
            f"{where} has a vocabulary of {config.vocab_size} tokens, but the pipeline's tokenizer produces ids up to "
            f"{vocab - 1}: it was trained with another tokenizer"
        )


def _model_type(config_file: Path) -> str | None:
    return json.loads(config_file.read_text()).get("model_type") if config_file.is_file() else None


def t5_subfolder(root: Path, slot: str) -> str | None:
    """The folder of a local ``root`` holding a T5 encoder: the root (None), ``<slot>``, or the one T5 subfolder."""
    if _model_type(root / "config.json") == "t5":
        return None
    if _model_type(root / slot / "config.json") == "t5":
        return slot
    found = [p.parent.name for p in sorted(root.glob("*/config.json")) if _model_type(p) == "t5"]
    if len(found) == 1:
        return found[0]
    raise FileNotFoundError(
        f"no T5 encoder in {root}: expected a config.json of model_type 't5' at the top, in {slot}/, or in exactly "
        f"one subfolder (found {len(found)})"
    )


def t5_load_options(spec: Any, slot: str, base_config) -> dict[str, Any]:
    """Extra ``load_safe_text_encoder`` options for a T5 slot: the folder to read, or the architecture of a file."""
    if not isinstance(spec, (str, os.PathLike)):
        return {}
    path = Path(spec).expanduser()
    if path.is_dir():
        return {"subfolder": t5_subfolder(path, slot)}
    if path.is_file():
        from transformers import T5EncoderModel

        with torch.device("meta"):  # the base pipeline's architecture, without memory or initialisation
            return {"base": T5EncoderModel(base_config)}
    return {}
