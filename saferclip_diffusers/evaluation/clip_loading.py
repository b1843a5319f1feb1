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
from ..encoders import PICKLE_SUFFIXES, PickleCheckpointError, load_safe_text_encoder
from .clip_models import ClipEncoder, ImageTower, TextTower, Tokenize, hf_text_tower, hf_tokenize

OPEN_CLIP_PREFIX = "open_clip:"
OPEN_CLIP_SCHEMAS = ("hf-hub:", "local-dir:", OPEN_CLIP_PREFIX)
TOWERS = ("auto", "text", "both")
HUB_KEYS = ("cache_dir", "token", "revision", "local_files_only")
DEFAULT_CLIP = "openai/clip-vit-large-patch14"


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


def is_open_clip_spec(spec: str | os.PathLike) -> bool:
    """``hf-hub:``, ``local-dir:``, ``open_clip:`` specs, or a directory with only an open_clip config."""
    spec = str(spec)
    if spec.startswith(OPEN_CLIP_SCHEMAS):
        return True
    path = Path(spec).expanduser()
    return (
        path.is_dir() and (path / "open_clip_config.json").is_file() and not (path / "config.json").is_file()
    )


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


def _refuse_pickle(path: str | os.PathLike, what: str, allow_pickle: bool) -> None:
    if str(path).endswith(PICKLE_SUFFIXES) and not allow_pickle:
        raise PickleCheckpointError(
            f"{what} resolves to the pickle checkpoint {path}; loading pickle can run arbitrary code. Use a "
            "safetensors checkpoint, or pass allow_pickle=True (--allow-pickle) if you trust its source."
        )


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


def _open_clip_checkpoint(spec: str, allow_pickle: bool, cache_dir: str | None) -> tuple[str, str | None]:
    """(model name for open_clip, pretrained tag or file), after checking the checkpoint format."""
    import open_clip

    if spec.startswith("local-dir:") or not spec.startswith(OPEN_CLIP_SCHEMAS):
        folder = Path(spec.removeprefix("local-dir:")).expanduser()
        if not (folder / "open_clip_config.json").is_file():
            raise FileNotFoundError(f"no open_clip_config.json in {folder}")
        weights = sorted(p.name for p in folder.iterdir() if p.suffix in (".safetensors",) + PICKLE_SUFFIXES)
        if not weights:
            raise FileNotFoundError(f"no weights in {folder}: expected open_clip_model.safetensors")
        if not any(w.endswith(".safetensors") for w in weights):
            _refuse_pickle(folder / weights[0], spec, allow_pickle)
        return f"local-dir:{folder}", None
    if spec.startswith("hf-hub:"):
        from open_clip.pretrained import download_pretrained_from_hf

        path = download_pretrained_from_hf(
            spec.removeprefix("hf-hub:"), cache_dir=cache_dir
        )  # prefers safetensors
        _refuse_pickle(path, spec, allow_pickle)
        return spec, None
    name, _, pretrained = spec.removeprefix(OPEN_CLIP_PREFIX).partition("/")
    if not pretrained:
        raise ValueError(
            f"{spec!r} names no pretrained weights (it would be a random model); use open_clip:{name}/TAG with a tag "
            f"from open_clip.list_pretrained_tags_by_model({name!r}), or open_clip:{name}//path/to/weights.safetensors"
        )
    if Path(pretrained).expanduser().is_file():
        _refuse_pickle(pretrained, spec, allow_pickle)
        return name, str(Path(pretrained).expanduser())
    cfg = open_clip.get_pretrained_cfg(name, pretrained)
    if not cfg:
        raise ValueError(
            f"open_clip has no pretrained tag {pretrained!r} for {name!r} (and it is not a file); "
            f"tags: {open_clip.list_pretrained_tags_by_model(name)}"
        )
    _refuse_pickle(open_clip.download_pretrained(cfg, cache_dir=cache_dir), spec, allow_pickle)
    return name, pretrained


def _load_open_clip(
    spec: str, device: torch.device, dtype: torch.dtype, allow_pickle: bool, cache_dir: str | None = None
) -> ClipEncoder:
    import open_clip

    name, pretrained = _open_clip_checkpoint(spec, allow_pickle, cache_dir)
    model, _, preprocess = open_clip.create_model_and_transforms(
        name, pretrained=pretrained, cache_dir=cache_dir, weights_only=True
    )
    tokenizer = open_clip.get_tokenizer(name, cache_dir=cache_dir)

    def tokenize(texts: list[str]) -> dict[str, torch.Tensor]:
        return {"text": tokenizer(list(texts))}

    dim = int(model.visual.output_dim)
    text = TextTower(spec, tokenize, lambda inputs: model.encode_text(inputs["text"]), [model], dim)
    image = ImageTower(spec, preprocess, model.encode_image, [model], dim)
    return ClipEncoder(spec, text, image, device, dtype, open_clip_model=model, open_clip_tokenizer=tokenizer)


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
        return _load_open_clip(spec, device, dtype, allow_pickle, hub.get("cache_dir"))
    if spec.startswith(("/", ".", "~")) and not Path(spec).expanduser().exists():
        raise FileNotFoundError(f"CLIP directory does not exist: {spec}")
    model_type = hf_model_type(spec, **hub)
    if Path(spec).expanduser().is_dir() and model_type != "clip":
        raise ValueError(
            f"{spec} is not a full CLIP: expected a config.json with model_type 'clip' (CLIPModel) or an "
            f"open_clip_config.json; found model_type {model_type!r}"
        )
    return _load_hf_clip(spec, device, dtype, allow_pickle, **hub)


def _original_projection(original: ClipEncoder) -> tuple[torch.nn.Linear, Tokenize, int]:
    """The original CLIP's text projection as a Linear layer, its tokenizer and its vocabulary size."""
    model = original.open_clip_model
    if model is None:  # transformers: [body, projection]
        body, projection = original.text.modules
        return projection, original.text.tokenize, body.config.vocab_size
    proj = getattr(model, "text_projection", None)
    if proj is None or getattr(model, "text_pool_type", "argmax") not in ("argmax", "eos"):
        raise ValueError(
            f"{original.name}: this open_clip model has no CLIP text transformer (pooled at end-of-text with a "
            "projection) that a transformers CLIP text encoder could replace"
        )
    if isinstance(proj, torch.nn.Linear):
        linear = proj
    else:
        linear = torch.nn.Linear(proj.shape[0], proj.shape[1], bias=False)
        linear.weight.data.copy_(proj.detach().T.float())
    tokenizer = original.open_clip_tokenizer

    def tokenize(texts: list[str]) -> dict[str, torch.Tensor]:
        return {"input_ids": tokenizer(list(texts))}

    return linear, tokenize, int(model.vocab_size)


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
            _load_open_clip(str(safe), original.device, original.dtype, allow_pickle, hub.get("cache_dir"))
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
    projection, tokenize, vocab_size = _original_projection(original)
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
