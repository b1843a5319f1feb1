"""Resolve a safe text encoder and check that it fits a pipeline.

A safe encoder can be given as

- a Hugging Face Hub id or a local directory, in any of three layouts:
  a bare ``CLIPTextModel`` / ``CLIPTextModelWithProjection`` directory; a diffusers-style directory holding
  ``text_encoder/`` (and, for SDXL, ``text_encoder_2/``); or a full ``CLIPModel`` directory such as the
  released ``Adeely93/SafeR_CLIP`` and ``aimagelab/safeclip_vit-l_14``, from which the text tower is taken;
- an already loaded module.

Weights load from safetensors only; a checkpoint that has nothing but pickle files is refused unless
``allow_pickle=True``, because unpickling can run arbitrary code.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import _compat

_compat.patch_cpu_torchvision()

from transformers import CLIPTextModel, CLIPTextModelWithProjection  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

DEFAULT_SAFE_TEXT_ENCODER = "Adeely93/SafeR_CLIP"
"""The released SafeR-CLIP weights (a full CLIP ViT-L/14 ``CLIPModel``; licence cc-by-nc-4.0)."""

TRAINING_PROMPTS_FILE = "training_prompts.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
HUB_KWARGS = ("cache_dir", "token", "revision", "local_files_only", "proxies", "force_download")

SLOT_CLASSES: dict[str, type] = {"text_encoder": CLIPTextModel, "text_encoder_2": CLIPTextModelWithProjection}


class PickleCheckpointError(ValueError):
    """A checkpoint holds only pickle weights and ``allow_pickle`` was not given."""


class IncompatibleEncoderError(ValueError):
    """A safe encoder does not fit the pipeline it is meant for."""


def hub_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``from_pretrained`` keyword arguments that concern downloading."""
    return {k: kwargs[k] for k in HUB_KWARGS if k in kwargs}


def _looks_like_path(spec: str) -> bool:
    return (
        os.path.isabs(spec)
        or spec.startswith((".", "~"))
        or spec.endswith(("/", os.sep))
        or spec.count("/") > 1
        or os.sep != "/" and os.sep in spec
    )


def _local_root(spec: str | os.PathLike, hub: dict[str, Any]) -> tuple[Path, bool]:
    """A local directory holding at least the config files of ``spec``, and whether it came from the Hub."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path, False
    spec = str(spec)
    if path.exists():
        raise NotADirectoryError(f"safe text encoder path {spec!r} is a file; give the directory that holds config.json")
    if _looks_like_path(spec):
        raise FileNotFoundError(f"safe text encoder path does not exist: {spec!r}")
    from huggingface_hub import snapshot_download

    try:  # configs only (a few kB): enough to tell the layout apart before any weights move
        root = snapshot_download(spec, allow_patterns=["config.json", "*/config.json", "model_index.json"], **hub)
    except Exception as err:  # noqa: BLE001 - re-raised with what to do
        raise OSError(
            f"could not resolve safe text encoder {spec!r}: not a local directory, and the Hub lookup failed "
            f"({type(err).__name__}: {err}). Check the id, log in for gated repos, or pass a local directory."
        ) from err
    return Path(root), True


def _subfolder_for(root: Path, slot: str) -> str | None:
    """Which folder of ``root`` holds the encoder for ``slot`` (None = the root itself)."""
    if (root / slot / "config.json").is_file():
        return slot
    if (root / "config.json").is_file():
        model_type = json.loads((root / "config.json").read_text()).get("model_type", "")
        if model_type in ("clip", "clip_text_model"):
            return None
        raise IncompatibleEncoderError(f"{root / 'config.json'} describes a {model_type!r} model, not a CLIP text encoder")
    found = sorted(p.parent.name for p in root.glob("*/config.json"))
    raise FileNotFoundError(
        f"no CLIP text encoder for {slot!r} in {root}: expected {slot}/config.json (diffusers layout) or a "
        f"config.json of a CLIPModel / CLIP text model at the top; found configs in {found or 'no subfolder'}"
    )


def _check_weights(folder: Path, allow_pickle: bool) -> bool:
    """Return ``use_safetensors`` for a local folder, refusing pickle-only checkpoints unless allowed."""
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    if any(n.endswith(".safetensors") for n in names):
        return True
    pickles = [n for n in names if n.endswith(PICKLE_SUFFIXES)]
    if not pickles:
        raise FileNotFoundError(f"no weights in {folder}: expected model.safetensors (found {names})")
    if not allow_pickle:
        raise PickleCheckpointError(
            f"{folder} has only pickle weights ({', '.join(pickles)}); loading pickle can run arbitrary code. "
            "Convert it to safetensors, or pass allow_pickle=True if you trust its source."
        )
    return False


def has_slot(spec: Any, slot: str, **kwargs: Any) -> bool:
    """Whether ``spec`` (an id or directory) holds a diffusers-style ``slot`` folder, e.g. ``text_encoder_2``."""
    if not isinstance(spec, (str, os.PathLike)):
        return False
    try:
        root, _ = _local_root(spec, hub_kwargs(kwargs))
    except (OSError, ValueError):
        return False
    return (root / slot / "config.json").is_file()


def load_safe_text_encoder(
    spec: str | os.PathLike | torch.nn.Module,
    slot: str = "text_encoder",
    *,
    allow_pickle: bool = False,
    torch_dtype: torch.dtype | None = None,
    model_class: type | None = None,
    **kwargs: Any,
) -> torch.nn.Module:
    """Load the safe text encoder for ``slot`` (``text_encoder``: CLIP ViT-L/14 class; ``text_encoder_2``: SDXL's bigG).

    Extra keyword arguments are Hub options (``cache_dir``, ``token``, ``revision``, ``local_files_only``, ...).
    """
    if model_class is None and slot not in SLOT_CLASSES:
        raise ValueError(f"unknown text encoder slot {slot!r}; expected one of {sorted(SLOT_CLASSES)}")
    model_class = model_class or SLOT_CLASSES[slot]  # explicit class: e.g. SD3's CLIP-L slot has a projection
    if isinstance(spec, torch.nn.Module):
        if type(spec).__name__.startswith("Peft"):
            raise TypeError("the safe encoder is a peft model: call merge_and_unload() on it first")
        if not isinstance(spec, model_class):
            raise TypeError(f"the safe encoder for {slot!r} must be a {model_class.__name__}, got {type(spec).__name__}")
        return spec.to(torch_dtype) if torch_dtype is not None else spec
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"safe text encoder must be a hub id, a directory or a module, got {type(spec).__name__}")

    hub = hub_kwargs(kwargs)
    root, from_hub = _local_root(spec, hub)
    subfolder = _subfolder_for(root, slot)
    load_kwargs: dict[str, Any] = {"dtype": torch_dtype} if torch_dtype is not None else {}
    if from_hub:
        source: str | Path = str(spec)
        load_kwargs.update(hub)
        use_safetensors = not allow_pickle or None
        if subfolder:
            load_kwargs["subfolder"] = subfolder
    else:
        source = root / subfolder if subfolder else root
        use_safetensors = _check_weights(source, allow_pickle)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # a CLIPModel checkpoint's vision weights are "unexpected" by design
    try:
        return model_class.from_pretrained(source, use_safetensors=use_safetensors, **load_kwargs).eval()
    except OSError as err:
        if from_hub and not allow_pickle and "safetensors" in str(err):
            raise PickleCheckpointError(
                f"{spec!r} has no safetensors weights for {slot!r}; pickle weights are refused. Pass "
                "allow_pickle=True if you trust its source."
            ) from err
        raise
    finally:
        hf_logging.set_verbosity(verbosity)


def read_training_prompts(spec: Any, **kwargs: Any) -> dict[str, list[str]] | None:
    """The prompts a training export recorded (``{"unsafe": [...], "safe": [...]}``), or None if it has none."""
    if not isinstance(spec, (str, os.PathLike)):
        return None
    path = Path(spec).expanduser() / TRAINING_PROMPTS_FILE
    if not path.is_file():
        if Path(spec).expanduser().exists() or _looks_like_path(str(spec)):
            return None
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(str(spec), TRAINING_PROMPTS_FILE, **hub_kwargs(kwargs)))
        except Exception:  # noqa: BLE001 - most released encoders do not record their prompts
            return None
    data = json.loads(path.read_text())
    return {k: [str(p) for p in data.get(k, [])] for k in ("unsafe", "safe")}


# ------------------------------------------------------------------------------------------- compatibility


@dataclass(frozen=True)
class SlotExpectation:
    """What a pipeline needs of the encoder in one slot, read from its configs (no weights needed)."""

    slot: str
    hidden_size: int
    vocab_size: int  # the tokenizer's
    eos_token_id: int | None
    max_length: int
    projection_dim: int | None = None  # SDXL's pooled vector width (text_encoder_2 only)


def check_encoder(encoder: torch.nn.Module, expected: SlotExpectation, name: str = "safe encoder") -> None:
    """Raise :class:`IncompatibleEncoderError` when ``encoder`` cannot stand in ``expected.slot``."""
    cfg = encoder.config
    where = f"{name} for {expected.slot!r}"
    if cfg.hidden_size != expected.hidden_size:
        raise IncompatibleEncoderError(
            f"{where} has hidden size {cfg.hidden_size}, but the UNet's cross-attention expects "
            f"{expected.hidden_size} from this slot. A CLIP ViT-L/14 encoder (768) fits SD 1.x and SDXL's "
            "text_encoder; SD 2.x needs an OpenCLIP ViT-H/14 encoder (1024); SDXL's text_encoder_2 needs bigG (1280)."
        )
    if expected.projection_dim is not None:
        if not hasattr(encoder, "text_projection"):
            raise IncompatibleEncoderError(
                f"{where} has no text projection: SDXL's second encoder must be a CLIPTextModelWithProjection, "
                "whose pooled text_embeds condition the UNet"
            )
        if cfg.projection_dim != expected.projection_dim:
            raise IncompatibleEncoderError(
                f"{where} projects to {cfg.projection_dim} dims, but the UNet expects a pooled vector of "
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
    if cfg.max_position_embeddings < expected.max_length:
        raise IncompatibleEncoderError(
            f"{where} holds {cfg.max_position_embeddings} positions, but the tokenizer pads to {expected.max_length}"
        )
