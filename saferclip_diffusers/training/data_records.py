"""The training data's common pieces: :class:`SafetyData`, table-reading helpers with row-naming errors, and the
deterministic unsafe-prompt selection (hash hold-out, seeded sampling) every reader of :mod:`.data` uses."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..datasets import (
    coco_image_name,
    coco_image_path,
    image_path,
    record_location,
    required_field,
)
from .mining import normalise_caption

BUNDLED_NOTES = {
    "bundled:i2p": "I2P benchmark prompts (Schramowski et al., CVPR 2023; MIT), bundled with saferclip-diffusers",
    "bundled:coco": "COCO-30k captions (COCO Consortium, CC-BY-4.0), bundled with saferclip-diffusers",
}


@dataclass
class SafetyData:
    unsafe_texts: list[str]
    safe_texts: list[str]
    pair: np.ndarray
    unsafe_images: list[str] | None = None
    safe_images: list[str] | None = None
    categories: list[str] | None = None
    description: dict[str, Any] = field(default_factory=dict)

    @property
    def paired(self) -> bool:
        return bool((self.pair >= 0).any())

    def check(self) -> SafetyData:
        if not self.unsafe_texts:
            raise ValueError(f"no unsafe captions found ({self.description.get('files')})")
        if not self.safe_texts:
            raise ValueError(f"no safe captions found ({self.description.get('files')})")
        if len(self.pair) != len(self.unsafe_texts):
            raise ValueError("internal: one pair index per unsafe caption is required")
        return self


def subset_unsafe(data: SafetyData, keep: np.ndarray) -> SafetyData:
    pick = lambda xs: [xs[i] for i in keep] if xs is not None else None  # noqa: E731
    return SafetyData(
        unsafe_texts=pick(data.unsafe_texts),
        safe_texts=data.safe_texts,
        pair=data.pair[keep],
        unsafe_images=pick(data.unsafe_images),
        safe_images=data.safe_images,
        categories=pick(data.categories),
        description=data.description,
    )


# ------------------------------------------------------------------------------------------ table reading


def resolve_source(spec: str) -> Path:
    from saferclip_diffusers import data as bundled

    names = {"bundled:i2p": bundled.I2P_CSV, "bundled:coco": bundled.COCO_30K_CSV}
    if spec.startswith("bundled:"):
        if spec not in names:
            raise ValueError(f"unknown bundled data {spec!r}; choose one of {sorted(names)}")
        return Path(names[spec])
    path = Path(spec).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    return path


def row_where(path: Path, i: int) -> str:
    return record_location(path, i)


def row_field(row: dict, name: str, path: Path, i: int) -> str:
    return required_field(row, name, record_location(path, i))


def pick_column(
    rows: list[dict], preferred: str | None, candidates: tuple[str, ...], path: Path, role: str
) -> str:
    columns = list(rows[0]) if rows else []
    if preferred:
        if rows and preferred not in columns:
            raise ValueError(f"{path}: no column {preferred!r} for the {role} captions (columns: {columns})")
        return preferred
    for name in candidates:
        if name in columns:
            return name
    raise ValueError(
        f"{path}: cannot find the {role} captions; name the column in the config (columns: {columns})"
    )


def image_file(path_text: str, root: Path | None, base: Path, where: str) -> str:
    candidate = image_path(path_text, root, base)
    if not candidate.is_file():
        raise FileNotFoundError(f"{where}: image not found: {candidate}")
    return str(candidate)


def coco_image_file(coco_id: str, root: Path, where: str) -> str:
    found = coco_image_path(root, coco_id)
    if found is None:
        raise FileNotFoundError(
            f"{where}: COCO image {coco_image_name(coco_id)} not found under {root}/{{train,val,test}}2017"
        )
    return str(found)


# ------------------------------------------------------------------------------------------ selection


def held_out(text: str, fraction: float) -> bool:
    """Deterministic hash split: a prompt is held out (never trained on) when its hash falls below ``fraction``."""
    digest = hashlib.sha1(normalise_caption(text).encode("utf-8")).hexdigest()
    return int(digest[:8], 16) / 2**32 < fraction


def sample_indices(n: int, limit: int | None, seed: int) -> np.ndarray:
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))
