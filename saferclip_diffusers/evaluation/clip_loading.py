"""Load any CLIP, original or safe, as a :class:`~.clip_models.ClipEncoder`.

A CLIP is named by a spec string:

- a transformers ``CLIPModel`` hub id or directory, e.g. ``openai/clip-vit-large-patch14``;
- an open_clip model: ``hf-hub:ORG/NAME``, ``local-dir:/path`` (or a directory holding only
  ``open_clip_config.json`` + weights), or ``open_clip:ARCH/PRETRAINED`` (a built-in architecture and a pretrained
  tag or checkpoint file, e.g. ``open_clip:ViT-B-32/laion2b_s34b_b79k``).

The *safe* variant of a CLIP is

- the same CLIP with its text tower replaced by a safe text encoder (a hub id, a training export, a diffusers
  layout or a bare ``CLIPTextModel``, resolved by :func:`saferclip_diffusers.encoders.load_safe_text_encoder`).
  Its pooled output goes through the original CLIP's text projection (a ``CLIPTextModelWithProjection``, e.g. an
  SDXL ``text_encoder_2``, keeps its own), and it reads the original CLIP's tokens; or
- a full safe CLIP (Safe-CLIP and SafeR-CLIP release both towers as a ``CLIPModel``): ``towers="both"`` uses both
  of its towers, ``towers="text"`` only its text tower beside the original image tower.

Weights load from safetensors only unless ``allow_pickle=True`` (open_clip's own loader is used with
``weights_only=True`` when pickle is allowed).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import (
    AutoImageProcessor,
    AutoTokenizer,
    CLIPModel,
)

from ..devices import resolve_device, resolve_dtype
from ..encoders import PickleCheckpointError, load_safe_text_encoder
from .clip_models import ClipEncoder, ImageTower, hf_text_tower, hf_tokenize
from .open_clip_loading import is_open_clip_spec, load_open_clip, original_projection

TOWERS = ("auto", "text", "both")
HUB_KEYS = ("cache_dir", "token", "revision", "local_files_only")


# ----------------------------------------------------------------------------------------------- loading


def _hf_image_tower(source: str, model: CLIPModel, processor: Any) -> ImageTower:
    def preprocess(image: Image.Image) -> torch.Tensor:
        return processor(images=image, return_tensors="pt")["pixel_values"][0]

    def forward(pixels: torch.Tensor) -> torch.Tensor:
        return model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)

    return ImageTower(
        source,
        preprocess,
        forward,
        [model.vision_model, model.visual_projection],
        model.config.projection_dim,
    )


# ----------------------------------------------------------------------------------------------- encoder


def _hub(kwargs: dict[str, Any]) -> dict[str, Any]:
    unknown = set(kwargs) - set(HUB_KEYS)
    if unknown:
        raise TypeError(f"unexpected keyword arguments {sorted(unknown)}; hub options are {HUB_KEYS}")
    return {k: v for k, v in kwargs.items() if v is not None}


def hf_model_type(spec: str | os.PathLike, **hub: Any) -> str | None:
    """``model_type`` of the ``config.json`` at the top of a hub id or directory (None when there is none)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        config = path / "config.json"
    elif path.exists() or str(spec).startswith((".", "/", "~")):
        return None
    else:
        from huggingface_hub import hf_hub_download

        try:
            config = Path(hf_hub_download(str(spec), "config.json", **_hub(hub)))
        except Exception:  # noqa: BLE001 - no top-level config: a diffusers layout or a bad id (reported later)
            return None
    if not config.is_file():
        return None
    return json.loads(config.read_text()).get("model_type")


def _load_hf_clip(
    spec: str,
    device: torch.device,
    dtype: torch.dtype,
    allow_pickle: bool,
    fallback: ClipEncoder | None = None,
    **hub: Any,
) -> ClipEncoder:
    try:
        model = CLIPModel.from_pretrained(spec, use_safetensors=not allow_pickle or None, **hub)
    except OSError as err:
        if not allow_pickle and "safetensors" in str(err):
            raise PickleCheckpointError(
                f"{spec!r} has no safetensors weights; pickle weights are refused. Pass allow_pickle=True "
                "(--allow-pickle) if you trust its source."
            ) from err
        raise
    try:
        tokenizer = AutoTokenizer.from_pretrained(spec, **hub)
        processor = AutoImageProcessor.from_pretrained(spec, **hub)
    except (OSError, ValueError):
        if fallback is None:
            raise
        text = hf_text_tower(spec, model.text_model, fallback.text.tokenize, model.text_projection)
        image = ImageTower(
            spec,
            fallback.image.preprocess,
            _hf_image_tower(spec, model, None).forward,
            [model.vision_model, model.visual_projection],
            model.config.projection_dim,
        )
        return ClipEncoder(spec, text, image, device, dtype)
    tokenize = hf_tokenize(tokenizer, model.config.text_config.max_position_embeddings)
    text = hf_text_tower(spec, model.text_model, tokenize, model.text_projection)
    return ClipEncoder(spec, text, _hf_image_tower(spec, model, processor), device, dtype)


def load_clip(
    spec: str | os.PathLike,
    *,
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = "auto",
    allow_pickle: bool = False,
    **hub: Any,
) -> ClipEncoder:
    """Load a full CLIP (transformers ``CLIPModel`` or open_clip) from a spec (see the module docstring)."""
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    hub = _hub(hub)
    spec = str(spec)
    if is_open_clip_spec(spec):
        return load_open_clip(spec, device, dtype, allow_pickle, hub.get("cache_dir"))
    if spec.startswith(("/", ".", "~")) and not Path(spec).expanduser().exists():
        raise FileNotFoundError(f"CLIP directory does not exist: {spec}")
    model_type = hf_model_type(spec, **hub)
    if Path(spec).expanduser().is_dir() and model_type != "clip":
        raise ValueError(
            f"{spec} is not a full CLIP: expected a config.json with model_type 'clip' (CLIPModel) or an "
            f"open_clip_config.json; found model_type {model_type!r}"
        )
    return _load_hf_clip(spec, device, dtype, allow_pickle, **hub)


def load_safe_clip(
    original: ClipEncoder,
    safe: str | os.PathLike | torch.nn.Module | ClipEncoder,
    *,
    towers: str = "auto",
    slot: str = "text_encoder",
    allow_pickle: bool = False,
    **hub: Any,
) -> ClipEncoder:
    """The safe variant of ``original``: its text tower replaced by ``safe``, or the full safe CLIP ``safe``.

    ``towers``: ``auto`` (both towers of a full safe CLIP, else the text tower), ``text`` or ``both``.
    ``slot``: which text encoder of a diffusers-layout export to use (``text_encoder_2`` = SDXL's bigG, which
    keeps its own projection).
    """
    if towers not in TOWERS:
        raise ValueError(f"towers must be one of {TOWERS}, got {towers!r}")
    hub = _hub(hub)
    full: ClipEncoder | None = None
    if isinstance(safe, ClipEncoder):
        full = safe
    elif isinstance(safe, (str, os.PathLike)) and (
        is_open_clip_spec(safe) or hf_model_type(safe, **hub) == "clip"
    ):
        full = (
            load_open_clip(str(safe), original.device, original.dtype, allow_pickle, hub.get("cache_dir"))
            if is_open_clip_spec(safe)
            else _load_hf_clip(str(safe), original.device, original.dtype, allow_pickle, original, **hub)
        )
    if full is not None and towers in ("auto", "both"):
        return ClipEncoder(full.name, full.text, full.image, original.device, original.dtype)
    if full is not None:  # text tower only
        return ClipEncoder(
            f"{full.name} (text) + {original.name} (image)",
            full.text,
            original.image,
            original.device,
            original.dtype,
        )
    if towers == "both":
        raise ValueError(
            f"{safe!r} holds a text encoder only; towers='both' needs a full CLIP (text and image)"
        )
    encoder = load_safe_text_encoder(safe, slot=slot, allow_pickle=allow_pickle, **hub)
    projection, tokenize, vocab_size = original_projection(original)
    if encoder.config.vocab_size < vocab_size:
        raise ValueError(
            f"safe text encoder {safe!r} has {encoder.config.vocab_size} tokens but {original.name}'s tokenizer "
            f"produces ids up to {vocab_size - 1}: it was trained for another CLIP"
        )
    name = safe if isinstance(safe, (str, os.PathLike)) else type(safe).__name__
    text = hf_text_tower(f"{name}", encoder, tokenize, projection)
    return ClipEncoder(
        f"{original.name} + safe text {name}", text, original.image, original.device, original.dtype
    )


def load_clip_pair(
    model: str | os.PathLike,
    safe: str | os.PathLike | torch.nn.Module,
    *,
    towers: str = "auto",
    slot: str = "text_encoder",
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = "auto",
    allow_pickle: bool = False,
    **hub: Any,
) -> tuple[ClipEncoder, ClipEncoder]:
    """(original, safe) for a CLIP spec and a safe encoder or safe CLIP spec."""
    original = load_clip(model, device=device, dtype=dtype, allow_pickle=allow_pickle, **hub)
    return original, load_safe_clip(
        original, safe, towers=towers, slot=slot, allow_pickle=allow_pickle, **hub
    )
