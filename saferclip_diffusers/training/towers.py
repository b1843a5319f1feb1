"""Loading the original (pre-training) towers of one configured encoder: transformers CLIP (full ``CLIPModel`` or
a text encoder), SDXL's ``text_encoder_2``, open_clip models (converted), generic mean-pooled text encoders, and the
offline ``tiny:`` models; with clear errors for missing paths, unavailable hub models and pickle-only weights."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import (
    CLIPImageProcessor,
    CLIPModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionModelWithProjection,
    PretrainedConfig,
)

from saferclip_diffusers.hub import explain_unavailable, is_local, require_local_dir

from .config import EncoderSettings


@dataclass
class Towers:
    text: CLIPTextModelWithProjection
    vision: CLIPVisionModelWithProjection | None
    tokenizer: CLIPTokenizer
    image_processor: CLIPImageProcessor | None
    source: dict[str, Any] = field(default_factory=dict)


def resolve_model_path(spec: str, what: str = "model") -> str:
    """``tiny:KIND`` -> the cached tiny model directory; a local path -> itself (it must exist); a hub id unchanged."""
    if spec.startswith("tiny:"):
        from saferclip_diffusers.tiny import tiny_model_dir

        return str(tiny_model_dir(spec.split(":", 1)[1]))
    if spec.startswith("package:"):  # methods hook: a model shipped inside a Python package
        from .backbones import package_model_dir

        return package_model_dir(spec.split(":", 1)[1])
    if is_local(spec):
        return str(require_local_dir(spec, what))
    return spec


def _weights_hint(path: str, subfolder: str | None, err: BaseException) -> str:
    folder = Path(path) / (subfolder or "")
    pickles = [p.name for p in folder.glob("*.bin")] if folder.is_dir() else []
    if pickles or "safetensors" in str(err):
        return (
            " It has no safetensors weights"
            + (f" (only {', '.join(sorted(pickles))})" if pickles else "")
            + ": set allow_pickle=true to load pickle weights (they can run code; the export is safetensors)."
        )
    return ""


def from_pretrained(cls, spec: str, path: str, allow_pickle: bool, what: str, **kwargs):
    """``cls.from_pretrained`` with errors that say which model, why, and what to do (never a bare traceback)."""
    try:
        return cls.from_pretrained(path, use_safetensors=not allow_pickle, **kwargs)
    except OSError as err:
        hint = _weights_hint(path, kwargs.get("subfolder"), err)
        if hint:
            raise ValueError(f"cannot load the {what} {spec!r}.{hint}") from err
        if is_local(path):
            raise ValueError(f"cannot load the {what} from {path!r}: {err}") from err
        raise explain_unavailable(
            spec, what, err, offline_alternative="--config tiny (random weights)"
        ) from err


def _split_clip(clip: CLIPModel) -> tuple[CLIPTextModelWithProjection, CLIPVisionModelWithProjection]:
    """The two towers of a ``CLIPModel`` as stand-alone models sharing its weights (no copy)."""
    text_cfg = clip.config.text_config
    text_cfg.projection_dim = clip.config.projection_dim
    vision_cfg = clip.config.vision_config
    vision_cfg.projection_dim = clip.config.projection_dim
    with torch.device("meta"):
        text = CLIPTextModelWithProjection(text_cfg)
        vision = CLIPVisionModelWithProjection(vision_cfg)
    text.text_model, text.text_projection = clip.text_model, clip.text_projection
    vision.vision_model, vision.visual_projection = clip.vision_model, clip.visual_projection
    return text.eval(), vision.eval()


def _model_type(path: str, subfolder: str | None, revision: str | None, spec: str | None = None) -> str:
    try:
        config, _ = PretrainedConfig.get_config_dict(path, subfolder=subfolder or "", revision=revision)
    except OSError as err:
        if is_local(path):
            where = Path(path) / (subfolder or "")
            raise FileNotFoundError(
                f"model folder {str(where)!r} has no config.json: not a transformers model "
                "(give the folder of a CLIP model, or its subfolder)"
            ) from err
        raise explain_unavailable(
            spec or path, "encoder model", err, offline_alternative="--config tiny (random weights)"
        ) from err
    return config.get("model_type", "")


def _load_vision(
    spec: str, revision: str | None, allow_pickle: bool
) -> tuple[CLIPVisionModelWithProjection, CLIPImageProcessor]:
    path = resolve_model_path(spec, "image model")
    clip = from_pretrained(CLIPModel, spec, path, allow_pickle, "image model", revision=revision)
    return _split_clip(clip)[1], CLIPImageProcessor.from_pretrained(path, revision=revision)


def load_towers(
    s: EncoderSettings, need_vision: bool, allow_pickle: bool = False, need_projection: bool = True
) -> Towers:
    """Load the original (pre-training) towers of one configured encoder.

    ``need_projection=False`` (UWM, which reads token activations only) accepts a projection-less
    ``CLIPTextModel`` checkpoint (SD 2.x's OpenCLIP ViT-H ``text_encoder``): the text tower is then a plain
    ``CLIPTextModel`` whose pooled output is ``pooler_output``.
    """
    source = {"model": s.model, "backbone": s.backbone, "subfolder": s.subfolder, "revision": s.revision}
    if s.backbone == "open_clip":
        from .open_clip_convert import load_open_clip

        clip, tokenizer, processor = load_open_clip(s.model, s.pretrained)
        source["pretrained"] = s.pretrained
        text, vision = _split_clip(clip)
        return Towers(
            text, vision if need_vision else None, tokenizer, processor if need_vision else None, source
        )

    if s.backbone == "transformers-mean":  # methods hook: generic encoder with mean pooling (no image tower)
        from .backbones import load_mean_pooled

        if need_vision:
            raise ValueError(
                f"encoder {s.slot}: backbone transformers-mean is text-only; the data must have no images"
            )
        text, tokenizer = load_mean_pooled(
            resolve_model_path(s.model),
            s.subfolder,
            s.revision,
            s.tokenizer and resolve_model_path(s.tokenizer),
            s.tokenizer_subfolder,
            allow_pickle,
        )
        return Towers(text, None, tokenizer, None, source)
    path = resolve_model_path(s.model, "encoder model")
    model_type = _model_type(path, s.subfolder, s.revision, s.model)
    vision = processor = None
    if model_type == "clip":
        clip = from_pretrained(
            CLIPModel,
            s.model,
            path,
            allow_pickle,
            "encoder model",
            subfolder=s.subfolder or "",
            revision=s.revision,
        )
        text, vision = _split_clip(clip)
        if need_vision:
            processor = CLIPImageProcessor.from_pretrained(
                s.image_model and resolve_model_path(s.image_model) or path, revision=s.revision
            )
        else:
            vision = None
    elif model_type == "clip_text_model":
        text, info = from_pretrained(
            CLIPTextModelWithProjection,
            s.model,
            path,
            allow_pickle,
            "encoder model",
            subfolder=s.subfolder or "",
            revision=s.revision,
            output_loading_info=True,
        )
        if "text_projection.weight" in info["missing_keys"] and not need_projection:
            text = text.text_model  # the loaded CLIPTextModel; the untrained projection head is dropped
        elif "text_projection.weight" in info["missing_keys"]:
            raise ValueError(
                f"{s.model} ({s.subfolder or 'root'}) has no text_projection (a CLIPTextModel checkpoint): the losses need "
                "the projected embedding. Point `model` at the full CLIP model instead (for SD 1.x: "
                "openai/clip-vit-large-patch14)."
            )
        text = text.eval()
    else:
        raise ValueError(
            f"{s.model}: expected a CLIP model or CLIP text model, found model_type {model_type!r}"
        )
    if need_vision and vision is None:
        if not s.image_model:
            raise ValueError(
                f"encoder {s.slot}: the data has images but {s.model} has no image tower; set image_model "
                "(e.g. laion/CLIP-ViT-bigG-14-laion2B-39B-b160k for SDXL's text_encoder_2)"
            )
        vision, processor = _load_vision(s.image_model, None, allow_pickle)
        source["image_model"] = s.image_model
    tok_path = resolve_model_path(s.tokenizer) if s.tokenizer else path
    tok_sub = s.tokenizer_subfolder
    if tok_sub is None and not s.tokenizer and s.subfolder in ("text_encoder", "text_encoder_2"):
        tok_sub = s.subfolder.replace("text_encoder", "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(tok_path, subfolder=tok_sub or "", revision=s.revision)
    if vision is not None and vision.config.projection_dim != text.config.projection_dim:
        raise ValueError(
            f"encoder {s.slot}: image tower projects to {vision.config.projection_dim}, text to "
            f"{text.config.projection_dim}; they must come from the same CLIP model"
        )
    return Towers(text, vision, tokenizer, processor, source)
