"""Frozen reference embeddings ``T0``/``V0``, computed once per caption/image and cached on disk.

The frozen encoders never change, so their outputs are computed once before training (batched, with a
progress bar) instead of at every step, and stored as safetensors under the run's ``cache/`` folder, keyed
by a fingerprint of the model and the exact captions and images. A restarted or resumed run reloads them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from saferclip_diffusers.io import atomic_save_safetensors

from .config import TrainConfig
from .data import SafetyData
from .models import EncoderBundle, encode_text, reference_towers

CACHE_VERSION = 1
logger = logging.getLogger(__name__)


@dataclass
class FrozenEmbeddings:
    """Frozen embeddings of every caption/image of the data set, for one encoder (rows align with the data)."""

    text_unsafe: torch.Tensor
    text_safe: torch.Tensor
    hidden_unsafe: torch.Tensor | None = None
    hidden_safe: torch.Tensor | None = None
    image_unsafe: torch.Tensor | None = None
    image_safe: torch.Tensor | None = None

    def to_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.contiguous() for k, v in vars(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict[str, torch.Tensor]) -> FrozenEmbeddings:
        return cls(**d)


def _digest(items: list[str] | None) -> str:
    h = hashlib.sha256()
    for item in items or []:
        h.update(item.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def fingerprint(bundle: EncoderBundle, data: SafetyData) -> str:
    s = bundle.settings
    key = {
        "version": CACHE_VERSION,
        "model": s.model,
        "backbone": s.backbone,
        "subfolder": s.subfolder,
        "revision": s.revision,
        "pretrained": s.pretrained,
        "image_model": s.image_model,
        "hidden_layer": s.hidden_layer,
        "unsafe": _digest(data.unsafe_texts),
        "safe": _digest(data.safe_texts),
        "unsafe_images": _digest(data.unsafe_images),
        "safe_images": _digest(data.safe_images),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


@torch.no_grad()
def _encode_texts(
    text_model, bundle: EncoderBundle, texts: list[str], batch_size: int, device, desc: str, progress: bool
):
    from tqdm.auto import tqdm

    embeds, hidden = [], []
    for start in tqdm(range(0, len(texts), batch_size), desc=desc, disable=not progress, unit="batch"):
        ids = bundle.tokenize(texts[start : start + batch_size]).to(device)
        e, h = encode_text(text_model, ids, bundle.eos_token_id, bundle.settings.hidden_layer)
        embeds.append(e.float().cpu())
        if h is not None:
            hidden.append(h.float().cpu())
    return torch.cat(embeds), (torch.cat(hidden) if hidden else None)


@torch.no_grad()
def _encode_images(
    vision_model, bundle: EncoderBundle, paths: list[str], batch_size: int, device, desc: str, progress: bool
):
    from tqdm.auto import tqdm

    out = []
    for start in tqdm(range(0, len(paths), batch_size), desc=desc, disable=not progress, unit="batch"):
        pixels = bundle.pixel_values(paths[start : start + batch_size]).to(device)
        out.append(vision_model(pixel_values=pixels).image_embeds.float().cpu())
    return torch.cat(out)


def compute_frozen(
    bundle: EncoderBundle, data: SafetyData, cfg: TrainConfig, device, progress: bool = True
) -> FrozenEmbeddings:
    """Encode every caption (and image) of ``data`` with the frozen originals of ``bundle``."""
    bs = cfg.run.encode_batch_size
    with reference_towers(bundle, cfg) as (text0, vision0):
        text0.to(device)
        tu, hu = _encode_texts(
            text0, bundle, data.unsafe_texts, bs, device, f"T0 unsafe [{bundle.slot}]", progress
        )
        ts, hs = _encode_texts(
            text0, bundle, data.safe_texts, bs, device, f"T0 safe [{bundle.slot}]", progress
        )
        iu = isf = None
        if vision0 is not None:
            vision0.to(device)
            if data.unsafe_images:
                iu = _encode_images(
                    vision0, bundle, data.unsafe_images, bs, device, f"V0 unsafe [{bundle.slot}]", progress
                )
            if data.safe_images:
                isf = _encode_images(
                    vision0, bundle, data.safe_images, bs, device, f"V0 safe [{bundle.slot}]", progress
                )
    return FrozenEmbeddings(tu, ts, hu, hs, iu, isf)


def _load_valid(path: Path) -> dict[str, torch.Tensor] | None:
    """The tensors of a cache file, or None (with a warning, the file removed) when it is unreadable."""
    if not path.is_file():
        return None
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        logger.warning("cache file %s is unreadable (%s); it is only a cache: recomputing it", path, err)
        path.unlink(missing_ok=True)
        return None


def cached(
    path: Path,
    compute: Callable[[], dict[str, torch.Tensor]],
    is_main: bool,
    wait: Callable[[], None],
    metadata: dict[str, str] | None = None,
) -> dict[str, torch.Tensor]:
    """Load a safetensors cache, computing (main process) and atomically writing it when missing or corrupt."""
    tensors = _load_valid(path) if is_main else None
    if is_main and tensors is None:
        tensors = {k: v.contiguous() for k, v in compute().items()}
        atomic_save_safetensors(tensors, path, metadata)
    wait()
    if tensors is None:  # other processes read what the main process wrote
        tensors = load_file(str(path))
    return tensors


def load_or_compute_frozen(
    bundle: EncoderBundle, data: SafetyData, cfg: TrainConfig, cache_dir: Path, device, is_main: bool, wait
) -> FrozenEmbeddings:
    """The cached frozen embeddings of ``bundle`` (the main process computes and writes them; others wait)."""
    path = cache_dir / f"frozen-{bundle.slot}-{fingerprint(bundle, data)}.safetensors"
    tensors = cached(
        path,
        lambda: compute_frozen(bundle, data, cfg, device).to_dict(),
        is_main,
        wait,
        {"model": bundle.settings.model, "slot": bundle.slot},
    )
    return FrozenEmbeddings.from_dict(tensors)
