"""Single-file text-encoder exports for ComfyUI, AUTOMATIC1111, Forge and stable-diffusion.cpp.

Spec: modern-pipelines-uwm-des.md section 4. Every one of these tools reads the same standalone file layout:

- ``clip_l.safetensors``: HF key names under the nested ``text_model.`` prefix (never transformers 5.6's flat
  names, which none of them detects), ``text_projection.weight`` only if the source has a projection;
- ``clip_g.safetensors``: the same names for bigG, **with** ``text_projection.weight`` in ``nn.Linear`` layout
  ``[out, in]`` (A1111 loads it strictly; sd.cpp applies it as a Linear); never a bare ``text_projection``
  (ComfyUI would transpose it);
- no ``position_ids`` / ``logit_scale``; fp16 by default; metadata ``{"format": "pt"}`` as ComfyUI writes.

Where they go: ComfyUI ``models/text_encoders/`` (``CLIPLoader`` type ``stable_diffusion`` / ``sd3``, or
``DualCLIPLoader`` type ``sdxl`` / ``sd3`` / ``flux`` with the base's other file); A1111 (SD3) ``models/CLIP/``
with exactly these names; Forge: the "VAE / Text Encoder" selector; stable-diffusion.cpp ``--clip_l`` /
``--clip_g``.

The ``sgm`` format writes the text-encoder part of an all-in-one SD 1.x / SDXL checkpoint
(``cond_stage_model.transformer.*``, or ``conditioner.embedders.0.transformer.*`` and bigG in OpenCLIP layout
under ``conditioner.embedders.1.model.*``, section 4.7) to merge into a base checkpoint for the checkpoint
loaders of A1111 / Forge / ComfyUI or diffusers' ``from_single_file``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..io import atomic_save_safetensors
from .keys import PROJECTION_KEY, to_nested_layout
from .openclip import hf_to_openclip

STANDALONE = "standalone"
SINGLE_FILE_FORMATS: dict[str, str] = {  # format -> the file layout it reads
    "comfyui": STANDALONE,
    "a1111": STANDALONE,
    "forge": STANDALONE,
    "sdcpp": STANDALONE,
    "sgm": "sgm",
}
ROLES = ("clip_l", "clip_g", "clip_h")
SLOT_ROLES = {"text_encoder": "clip_l", "text_encoder_2": "clip_g"}
SGM_FILE = "text_encoders.sgm.safetensors"


def encoder_role(encoder: torch.nn.Module) -> str:
    """Which single file an encoder becomes, by the rule ComfyUI applies to files (a layer-30 key means bigG)."""
    cfg = encoder.config
    if cfg.num_hidden_layers >= 31 or cfg.hidden_size == 1280:
        return "clip_g"
    if cfg.hidden_size == 1024:
        return "clip_h"
    return "clip_l"


def _load(spec: Any, slot: str) -> torch.nn.Module:
    """A module as is; a folder or file through the verified loader, keeping a projection the folder declares."""
    from transformers import CLIPTextModelWithProjection

    from .loading import load_safe_text_encoder

    if isinstance(spec, torch.nn.Module):
        return spec
    cls = None
    path = Path(spec).expanduser()
    for config in (path / slot / "config.json", path / "config.json"):
        if config.is_file():
            if "CLIPTextModelWithProjection" in (json.loads(config.read_text()).get("architectures") or []):
                cls = CLIPTextModelWithProjection
            break
    return load_safe_text_encoder(spec, slot, model_class=cls)


def resolve_sources(source: Any) -> dict[str, torch.nn.Module]:
    """``{role: encoder}`` from a training export / diffusers folder (``text_encoder/`` [+ ``text_encoder_2/``]),
    a bare encoder folder or file, a module, or a dict keyed by role (``clip_l``...) or slot (``text_encoder``...).
    """
    if isinstance(source, dict):
        out = {}
        for key, spec in source.items():
            role = SLOT_ROLES.get(key, key)
            if role not in ROLES:
                raise ValueError(f"unknown encoder role {key!r}; use one of {ROLES} or {sorted(SLOT_ROLES)}")
            out[role] = _load(spec, "text_encoder_2" if role == "clip_g" else "text_encoder")
        return out
    if isinstance(source, torch.nn.Module):
        return {encoder_role(source): source}
    path = Path(source).expanduser()
    if path.is_dir() and any((path / slot / "config.json").is_file() for slot in SLOT_ROLES):
        return {
            role: _load(path, slot)
            for slot, role in SLOT_ROLES.items()
            if (path / slot / "config.json").is_file()
        }
    encoder = _load(path, "text_encoder")
    return {encoder_role(encoder): encoder}


def single_file_tensors(
    encoder: torch.nn.Module, role: str, dtype: torch.dtype | None
) -> dict[str, torch.Tensor]:
    """The standalone file's tensors: nested HF keys, projection as the source had it (required for clip_g)."""
    tensors = to_nested_layout(encoder.state_dict())
    if role == "clip_g" and PROJECTION_KEY not in tensors:
        raise ValueError(
            "clip_g.safetensors needs text_projection.weight (A1111 loads it strictly and SDXL/SD3 use the "
            "projected pooled vector): export the CLIPTextModelWithProjection, e.g. the export's text_encoder_2/"
        )
    return {
        k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in tensors.items()
    }


def sgm_tensors(files: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The text-encoder keys of an all-in-one SD 1.x (clip_l only) or SDXL (clip_l + clip_g) checkpoint."""
    if "clip_h" in files:
        raise ValueError(
            "the sgm format covers SD 1.x and SDXL; an SD 2.x checkpoint needs OpenCLIP-H's 24th block"
        )
    length = (
        files["clip_l"]["text_model.embeddings.position_embedding.weight"].shape[0]
        if "clip_l" in files
        else 77
    )
    ids = torch.arange(length, dtype=torch.int64).unsqueeze(0)  # old loaders expect it, as ComfyUI writes it
    out: dict[str, torch.Tensor] = {}
    if "clip_g" in files:
        l_prefix = "conditioner.embedders.0.transformer."
        out.update(hf_to_openclip(files["clip_g"], prefix="conditioner.embedders.1.model."))
    else:
        l_prefix = "cond_stage_model.transformer."
    if "clip_l" in files:
        out.update({l_prefix + k: v for k, v in files["clip_l"].items() if k != PROJECTION_KEY})
        out[l_prefix + "text_model.embeddings.position_ids"] = ids
    return out


def export_single_files(
    source: Any,
    out_dir: str | os.PathLike,
    *,
    formats: tuple[str, ...] | list[str] = ("comfyui", "a1111", "forge", "sdcpp"),
    dtype: torch.dtype | None = torch.float16,
) -> dict[str, Path]:
    """Write single-file text encoders for the given tools and return ``{name: path}``.

    ``source``: an encoder folder or training export (``text_encoder/`` [+ ``text_encoder_2/``]), a weights file,
    a loaded module, or a dict ``{"clip_l"|"text_encoder": ..., "clip_g"|"text_encoder_2": ...}``. Standalone
    formats share one file per encoder (``clip_l``, ``clip_g``; ``clip_h`` for an SD 2.x tower); ``sgm``
    writes ``text_encoders.sgm.safetensors``. ``dtype=None`` keeps the source dtype. Files are written atomically.
    """
    unknown = [f for f in formats if f not in SINGLE_FILE_FORMATS]
    if unknown or not formats:
        raise ValueError(
            f"unknown single-file format(s) {unknown}; choose from {sorted(SINGLE_FILE_FORMATS)}"
        )
    layouts = {SINGLE_FILE_FORMATS[f] for f in formats}
    files = {role: single_file_tensors(enc, role, dtype) for role, enc in resolve_sources(source).items()}
    meta = {"format": "pt", "saferclip_diffusers.formats": ",".join(sorted(formats))}
    out_dir = Path(out_dir).expanduser()
    written: dict[str, Path] = {}
    if STANDALONE in layouts:
        for role, tensors in files.items():
            written[role] = atomic_save_safetensors(tensors, out_dir / f"{role}.safetensors", metadata=meta)
    if "sgm" in layouts:
        written["sgm"] = atomic_save_safetensors(sgm_tensors(files), out_dir / SGM_FILE, metadata=meta)
    return written
