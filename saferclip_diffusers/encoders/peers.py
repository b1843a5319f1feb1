"""Peers' safe encoders from plain weight files: DES / SAGE ``.pt``, AdvUnlearn ``pytorch_model.bin``, single files.

- DES and SAGE release ``torch.save`` dicts whose ``model_state_dict`` is a ``CLIPTextModel`` (or
  ``T5EncoderModel``) state dict in transformers 4.x's nested layout; DES's bigG was trained as a plain
  ``CLIPTextModel``, so it has **no** ``text_projection``: in a slot that needs one (SDXL / SD3
  ``text_encoder_2``) the pipeline's own projection is kept (pass ``base=``).
- AdvUnlearn ships ``config.json`` + a pickled ``pytorch_model.bin`` per concept subfolder.
- Single files (``clip_l.safetensors`` as ComfyUI, A1111, Forge and stable-diffusion.cpp use them), in the
  nested, flat or OpenCLIP key layout.

Pickle files are opened only with ``allow_pickle=True``, and then only with ``torch.load(weights_only=True)``,
which unpickles tensors and plain containers and refuses any other object. Every load is checked key by key
(:func:`.keys.load_exact`): a file whose keys do not cover the model raises instead of leaving random weights.
"""

from __future__ import annotations

import copy
import json
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
from transformers.initialization import no_init_weights

from .errors import IncompatibleEncoderError, PickleCheckpointError
from .keys import PROJECTION_KEY, canonical_clip_state_dict, load_exact, to_module_layout

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
WEIGHT_SUFFIXES = (".safetensors", *PICKLE_SUFFIXES)
_DES_FIELDS = ("epoch", "using_text_encoder", "is_t5", "is_sd_v3", "embedding_dim")
_LAYER = re.compile(r"^text_model\.encoder\.layers\.(\d+)\.")

# What the weights of a CLIP text tower cannot tell: heads and activation, by width (the towers SD uses).
CLIP_FAMILIES: dict[int, tuple[str, int, str]] = {
    768: ("CLIP ViT-L/14 (OpenAI; SD 1.x, SDXL/SD3/FLUX clip_l)", 12, "quick_gelu"),
    1024: ("OpenCLIP ViT-H/14 (SD 2.x)", 16, "gelu"),
    1280: ("OpenCLIP ViT-bigG/14 (SDXL/SD3 clip_g)", 20, "gelu"),
}


def pickle_refusal(path: Path) -> PickleCheckpointError:
    return PickleCheckpointError(
        f"refusing to load the pickle file {str(path)!r}: unpickling can run arbitrary code. Convert it once to "
        f"safetensors (`saferclip-export convert {path} --out DIR --allow-pickle`), or pass allow_pickle=True "
        "if you trust its source (it is then read with torch.load(weights_only=True))."
    )


@dataclass
class Checkpoint:
    """The tensors of one weight file, and what the file said about itself."""

    path: Path
    tensors: dict[str, torch.Tensor]
    info: dict[str, Any] = field(default_factory=dict)


def read_weights_file(path: str | Path, *, allow_pickle: bool = False) -> Checkpoint:
    """Read a ``.safetensors`` file, or (only with ``allow_pickle``) a pickle file, unwrapping DES/SAGE dicts."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file does not exist: {str(path)!r}")
    name = path.name.lower()
    if name.endswith(".safetensors"):
        from safetensors.torch import load_file

        return Checkpoint(path, load_file(str(path)))
    if not name.endswith(PICKLE_SUFFIXES):
        raise ValueError(f"{str(path)!r} is not a weights file: expected one of {', '.join(WEIGHT_SUFFIXES)}")
    if not allow_pickle:
        raise pickle_refusal(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{str(path)!r} holds Python objects besides tensors, so it cannot be read safely with "
            f"torch.load(weights_only=True) ({err}); it is not a plain weights checkpoint"
        ) from err
    info: dict[str, Any] = {}
    if isinstance(obj, dict) and isinstance(obj.get("model_state_dict"), dict):  # DES / SAGE
        info = {k: obj[k] for k in _DES_FIELDS if isinstance(obj.get(k), (int, float, bool, str))}
        info["layout"] = "des"
        obj = obj["model_state_dict"]
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):  # lightning-style wrapper
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(
            f"{str(path)!r} is not a state dict of tensors (nor a DES/SAGE dict with model_state_dict)"
        )
    sidecar = path.with_name(path.stem + "-metadata.json")  # DES writes checkpoint-N-metadata.json
    if sidecar.is_file():
        info["metadata"] = json.loads(sidecar.read_text())
    return Checkpoint(path, dict(obj), info=info)


def read_weights_folder(folder: Path, *, allow_pickle: bool) -> Checkpoint:
    """The pickle weights of a transformers folder (``pytorch_model.bin``, sharded or not)."""
    index = folder / "pytorch_model.bin.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else None
    if files:
        files = [folder / f for f in files]
    elif (folder / "pytorch_model.bin").is_file():  # not training_args.bin and the like
        files = [folder / "pytorch_model.bin"]
    else:
        files = sorted(p for p in folder.iterdir() if p.name.endswith(PICKLE_SUFFIXES))
    if not files:
        raise FileNotFoundError(f"no weights in {folder}: expected model.safetensors or pytorch_model.bin")
    if not allow_pickle:
        raise pickle_refusal(files[0])
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        tensors.update(read_weights_file(f, allow_pickle=True).tensors)
    return Checkpoint(files[0], tensors)


def is_clip_class(model_class: type) -> bool:
    return issubclass(model_class, (CLIPTextModel, CLIPTextModelWithProjection))


def infer_clip_config(canonical: dict[str, torch.Tensor], *, source: str) -> CLIPTextConfig:
    """The config of a CLIP text tower of a known family (L, H, bigG), from its nested-layout weights."""
    vocab, width = canonical["text_model.embeddings.token_embedding.weight"].shape
    if width not in CLIP_FAMILIES:
        raise IncompatibleEncoderError(
            f"{source}: a {width}-wide CLIP text encoder is none of the known towers ({sorted(CLIP_FAMILIES)} wide), "
            "and its weights do not record attention heads or activation; pass base= (the pipeline's own encoder "
            "for this slot, or its folder) so its config is used"
        )
    _, heads, act = CLIP_FAMILIES[width]
    layers = 1 + max(int(m.group(1)) for k in canonical if (m := _LAYER.match(k)))
    projection = canonical.get(PROJECTION_KEY)
    return CLIPTextConfig(
        vocab_size=vocab,
        hidden_size=width,
        intermediate_size=canonical["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=canonical["text_model.embeddings.position_embedding.weight"].shape[0],
        hidden_act=act,
        projection_dim=projection.shape[0] if projection is not None else width,
        layer_norm_eps=1e-5,
        bos_token_id=0,  # as in the SD pipelines' own configs; eos 2 = pool at the highest token id (CLIP's EOS)
        eos_token_id=2,
        pad_token_id=1,
    )


def _trim_layers(canonical: dict[str, torch.Tensor], n: int, source: str) -> dict[str, torch.Tensor]:
    have = 1 + max(int(m.group(1)) for k in canonical if (m := _LAYER.match(k)))
    if n > have:
        raise IncompatibleEncoderError(f"{source} has {have} layers; cannot keep {n}")
    return {k: v for k, v in canonical.items() if not ((m := _LAYER.match(k)) and int(m.group(1)) >= n)}


def build_encoder(
    tensors: dict[str, torch.Tensor],
    model_class: type,
    *,
    source: str,
    config: Any = None,
    base: torch.nn.Module | None = None,
    keep_base_projection: bool = False,
    num_hidden_layers: int | None = None,
    prefix: str | None = None,
) -> torch.nn.Module:
    """A ``model_class`` encoder holding exactly ``tensors`` (verified key by key), in eval mode.

    ``config`` (else ``base.config``, else inferred for CLIP L/H/bigG) gives the architecture. A CLIP file
    without ``text_projection`` going into a class that has one takes ``base``'s projection, as does any file
    when ``keep_base_projection`` (SD3's CLIP-L, whose projection is the identity). ``num_hidden_layers`` keeps
    only the first layers (a 24-layer OpenCLIP-H tower for SD 2.x's 23-layer slot).
    """
    if config is None and base is not None:
        config = base.config
    if not is_clip_class(model_class):
        if config is None:
            raise IncompatibleEncoderError(
                f"{source}: a {model_class.__name__} file does not record its architecture; pass base= (the "
                "pipeline's own encoder for this slot, or its folder)"
            )
        with no_init_weights():
            model = model_class(copy.deepcopy(config))
        load_exact(model, tensors, source=source)
        return model.eval()
    canonical = canonical_clip_state_dict(tensors, source=source, prefix=prefix)
    if num_hidden_layers is not None:
        canonical = _trim_layers(canonical, num_hidden_layers, source)
    config = copy.deepcopy(config) if config is not None else infer_clip_config(canonical, source=source)
    if num_hidden_layers is not None:
        config.num_hidden_layers = num_hidden_layers
    if model_class is CLIPTextModelWithProjection and (
        keep_base_projection or PROJECTION_KEY not in canonical
    ):
        if base is None or not hasattr(base, "text_projection"):
            why = (
                "keep_base_projection=True"
                if keep_base_projection
                else ("the file has no text_projection (DES trains bigG as a plain CLIPTextModel)")
            )
            raise IncompatibleEncoderError(
                f"{source}: {why}; pass base= (the pipeline's own {model_class.__name__} for this slot) so that "
                "its projection is kept"
            )
        canonical[PROJECTION_KEY] = base.text_projection.weight.detach().clone()
    with no_init_weights():
        model = model_class(config)
    load_exact(model, to_module_layout(canonical, model), source=source)
    return model.eval()
