"""Redirection targets of every unsafe item (proximity-mined or the data set's pairs), cached on disk.

Training items are matched among the *training* safe captions; validation items among all captions (their own
held-out partner included), i.e. the target the method would pick for them. The result is cached under the
run's ``cache/`` folder, keyed by the frozen model's fingerprint and the settings that define it; a corrupt
cache file is recomputed with a warning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .data import SafetyData
from .mining import mine_targets
from .reference import FrozenEmbeddings, cached
from .settings import TrainConfig
from .split import Split


@dataclass
class Targets:
    """Per unsafe item: text target (safe index), image target (safe index) and difficulty (cosine)."""

    text: torch.Tensor
    image: torch.Tensor
    similarity: torch.Tensor


def compute_targets(
    cfg: TrainConfig, data: SafetyData, split: Split, frozen: FrozenEmbeddings, device
) -> dict[str, torch.Tensor]:
    cand = torch.as_tensor(split.train_safe)
    chunk = cfg.mining.chunk_size
    text, sim = mine_targets(
        frozen.text_unsafe, frozen.text_safe, cand, chunk, show_progress=True, device=device
    )
    val = torch.as_tensor(split.val_unsafe, dtype=torch.long)
    if len(val):
        v_text, v_sim = mine_targets(frozen.text_unsafe[val], frozen.text_safe, None, chunk, device=device)
        text[val], sim[val] = v_text, v_sim
    pair = torch.as_tensor(data.pair)
    if cfg.targets == "paired" and (pair >= 0).any():
        text = torch.where(pair >= 0, pair, text)
        sim = torch.nn.functional.cosine_similarity(frozen.text_unsafe, frozen.text_safe[text], dim=-1)
    image = text.clone()
    if cfg.mining.image_target == "nearest":
        image, _ = mine_targets(frozen.image_unsafe, frozen.image_safe, cand, chunk, device=device)
    return {"text": text, "image": image, "similarity": sim.float()}


def load_or_compute_targets(
    cfg: TrainConfig,
    data: SafetyData,
    split: Split,
    frozen: FrozenEmbeddings,
    key: str,
    cache_dir: Path,
    device,
    is_main: bool,
    wait: Callable[[], None],
) -> Targets:
    """The targets for this config and data (``key``: the reference encoder's fingerprint)."""
    name = f"targets-{key}-{cfg.targets}-{cfg.mining.image_target}-{cfg.seed}-{cfg.data.val_size}.safetensors"
    t = cached(cache_dir / name, lambda: compute_targets(cfg, data, split, frozen, device), is_main, wait)
    return Targets(t["text"], t["image"], t["similarity"])
