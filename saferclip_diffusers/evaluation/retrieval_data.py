"""Retrieval data: safe/unsafe pairs (ViSU and NSFWCaps layouts, read by :mod:`saferclip_diffusers.datasets`, the
readers training uses too) and the tiny offline set of scikit-image photographs.

Safe images are deduplicated (ViSU has several captions per COCO image), so with a safe gallery each image is
one gallery item rather than one copy per caption as in Safe-CLIP's code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..datasets import (
    COCO_SPLITS,
    VISU_FIELDS,
    coco_image_name,
    coco_image_path,
    image_path,
    read_records,
    record_location,
    required_field,
    resolve_nsfwcaps_columns,
)

LAYOUTS = ("auto", "visu", "nsfwcaps")


@dataclass(frozen=True)
class PairRecord:
    """One safe/unsafe pair: captions, images (the unsafe image is optional), category, and where it was read."""

    safe_caption: str
    unsafe_caption: str
    safe_image: Path
    unsafe_image: Path | None = None
    category: str | None = None
    where: str = ""


@dataclass
class RetrievalSet:
    """Pairs plus the deduplicated image lists the retrieval runs on."""

    name: str
    records: list[PairRecord]
    safe_images: list[Path] = field(init=False)
    image_of_record: torch.Tensor = field(init=False)  # record -> index into safe_images
    unsafe_images: list[Path] = field(init=False)
    record_of_unsafe_image: torch.Tensor = field(init=False)  # unsafe image -> its (first) record

    def __post_init__(self) -> None:
        if not self.records:
            raise ValueError(f"{self.name}: no records")
        index: dict[Path, int] = {}
        self.image_of_record = torch.tensor(
            [index.setdefault(r.safe_image, len(index)) for r in self.records]
        )
        self.safe_images = list(index)
        unsafe: dict[Path, int] = {}
        for i, r in enumerate(self.records):
            if r.unsafe_image is not None:
                unsafe.setdefault(r.unsafe_image, i)
        self.unsafe_images = list(unsafe)
        self.record_of_unsafe_image = torch.tensor(list(unsafe.values()), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def categories(self) -> list[str]:
        return sorted({r.category for r in self.records if r.category})


def _existing(path: Path, where: str, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{where}: {what} not found: {path}")
    return path


def _rows(path: Path, limit: int | None) -> list[tuple[str, dict]]:
    rows = read_records(path)
    rows = rows if limit is None else rows[:limit]
    return [(record_location(path, i), row) for i, row in enumerate(rows)]


def load_visu(
    path: str | os.PathLike,
    image_root: str | os.PathLike,
    unsafe_image_root: str | os.PathLike | None = None,
    use_unsafe_images: bool = True,
    limit: int | None = None,
) -> RetrievalSet:
    """ViSU records (``coco_id``, ``safe``, ``nsfw``, ``nsfw_im_path``, ``tag``) with COCO images under ``image_root``.

    ``nsfw_im_path`` is resolved under ``unsafe_image_root`` (default: the data file's folder); absolute paths that
    do not exist (e.g. the authors' cluster paths) are looked up by file name there (:func:`datasets.image_path`).
    """
    path, image_root = Path(path), Path(image_root).expanduser()
    unsafe_root = Path(unsafe_image_root).expanduser() if unsafe_image_root else path.parent
    hint = "ViSU records need coco_id, safe, nsfw; nsfw_im_path for V*->T"
    f = VISU_FIELDS
    records = []
    for where, row in _rows(path, limit):
        coco_id = required_field(row, f["coco_id"], where, hint)
        image = coco_image_path(image_root, coco_id)
        if image is None:
            raise FileNotFoundError(
                f"{where}: COCO image {coco_image_name(coco_id)} not found under {image_root} "
                f"(looked in {', '.join(COCO_SPLITS)} and the folder itself); pass the COCO root as image_root"
            )
        unsafe = None
        if use_unsafe_images:
            unsafe = _existing(
                image_path(required_field(row, f["unsafe_image"], where, hint), unsafe_root, path.parent),
                where,
                "unsafe image (nsfw_im_path)",
            )
        records.append(
            PairRecord(
                required_field(row, f["safe"], where, hint),
                required_field(row, f["unsafe"], where, hint),
                image,
                unsafe,
                str(row.get(f["category"]) or "").strip() or None,
                where,
            )
        )
    return RetrievalSet(path.name, records)


def load_nsfwcaps(
    path: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    unsafe_image_root: str | os.PathLike | None = None,
    use_unsafe_images: bool = True,
    limit: int | None = None,
    columns: dict[str, str] | None = None,
) -> RetrievalSet:
    """NSFWCaps-layout rows (safe caption, unsafe caption, image, optional unsafe image, category), CSV/JSON(L).

    Image values are paths relative to ``image_root`` (default: the data file's folder) or URLs, looked up by
    file name under ``image_root``; unsafe images likewise under ``unsafe_image_root`` (default ``image_root``).
    """
    path = Path(path)
    rows = _rows(path, limit)
    cols = resolve_nsfwcaps_columns(
        [r for _, r in rows], path, columns, required=("safe_caption", "unsafe_caption", "safe_image")
    )
    root = Path(image_root).expanduser() if image_root else path.parent
    unsafe_root = Path(unsafe_image_root).expanduser() if unsafe_image_root else root
    use_unsafe = use_unsafe_images and cols["unsafe_image"] is not None
    hint = f"columns in use: {', '.join(f'{k}={v}' for k, v in cols.items() if v)}"
    records = []
    for where, row in rows:
        image = _existing(
            image_path(required_field(row, cols["safe_image"], where, hint), root, path.parent),
            where,
            "safe image",
        )
        unsafe = None
        if use_unsafe:
            unsafe = _existing(
                image_path(required_field(row, cols["unsafe_image"], where, hint), unsafe_root, path.parent),
                where,
                "unsafe image",
            )
        category = str(row.get(cols["category"]) or "").strip() or None if cols["category"] else None
        records.append(
            PairRecord(
                required_field(row, cols["safe_caption"], where, hint),
                required_field(row, cols["unsafe_caption"], where, hint),
                image,
                unsafe,
                category,
                where,
            )
        )
    return RetrievalSet(path.name, records)


def load_retrieval_set(path: str | os.PathLike, layout: str = "auto", **kwargs) -> RetrievalSet:
    """Load ViSU- or NSFWCaps-layout data; ``auto`` picks ViSU when the records carry ``coco_id``."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if layout == "auto":
        first = read_records(path)[:1]
        layout = "visu" if first and "coco_id" in first[0] else "nsfwcaps"
    if layout == "visu":
        if kwargs.get("image_root") is None:
            raise ValueError("ViSU-layout data needs image_root: the COCO folder holding train2017/ val2017/")
        kwargs.pop("columns", None)
        return load_visu(path, **kwargs)
    return load_nsfwcaps(path, **kwargs)


# ----------------------------------------------------------------------------------------------- tiny data

# (skimage loader, COCO-style id, safe captions, unsafe rewrites, tag): hand-written for the offline tiny preset
