"""Safe T5 encoders for SD3's ``text_encoder_3`` and FLUX's ``text_encoder_2``, and the per-slot shape check.

A safe T5 can be a ``T5EncoderModel`` folder (or a diffusers-layout folder holding one in a subfolder), a single
``.safetensors`` state dict (read into the base pipeline's own T5 config; every weight must be present), a hub id,
or a loaded module. Pickle files (``.pt``/``.bin``, e.g. DES's ``des_t5.pt``) are refused unless
``allow_pickle=True``, and then read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..encoders import PICKLE_SUFFIXES, IncompatibleEncoderError, PickleCheckpointError
from ..hub import explain_unavailable, looks_like_path

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
