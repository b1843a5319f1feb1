"""Training data readers: ViSU, NSFW-Caps, plain safe/unsafe pairs, and unpaired prompt lists.

Every reader returns a :class:`SafetyData`: distinct safe captions (the pool), unsafe captions, for each unsafe
caption the index of its paired safe caption (``-1`` in unpaired mode, where pairs come from proximity
mining), and optional image paths. Layouts:

``visu``      ViSU (Safe-CLIP): JSON (list, ``{"0": {...}}`` or ``{"data": ...}``), JSONL, CSV or parquet with
              ``coco_id``, ``safe``, ``nsfw``, ``nsfw_im_path``, ``tag``. Safe images are looked up as
              ``image_root/{train,val,test}2017/<12-digit id>.jpg`` (or ``image_root/<id>.jpg``), unsafe
              images under ``unsafe_image_root``; images are used only when those roots are given.
``nsfwcaps``  NSFW-Caps (SafeR-CLIP): ``caption``, ``nsfw_caption``, ``image_coco_url``, ``chosen_category``;
              the safe image is ``image_root/<file name of the url>`` when ``image_root`` is given.
``pairs``     CSV/JSONL with ``safe`` and ``unsafe`` columns, optional ``safe_image``, ``unsafe_image``,
              ``category`` (image paths relative to ``image_root`` or to the file's folder).
``unpaired``  ``unsafe``: a list of unsafe prompts (CSV/JSONL column, or a TXT file, one per line);
              ``safe_pool``: a list of safe captions. ``bundled:i2p`` and ``bundled:coco`` name the packaged
              I2P prompts and COCO-30k captions, so no gated data set is needed.

A missing field or image is an error naming the file and row. Duplicate captions are removed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..datasets import read_records
from .config import DataSettings
from .data_records import (  # noqa: F401 - SafetyData, subset_unsafe: re-exported
    BUNDLED_NOTES,
    SafetyData,
    coco_image_file,
    held_out,
    image_file,
    pick_column,
    resolve_source,
    row_field,
    row_where,
    sample_indices,
    subset_unsafe,
)
from .mining import dedupe, normalise_caption

# ------------------------------------------------------------------------------------------ readers


def _paired(cfg: DataSettings, columns: dict[str, str | None], image_of) -> SafetyData:
    if not cfg.path:
        raise ValueError(
            f"data.format={cfg.format!r} needs data.path (the data file), e.g. data.path=/data/visu/train.json; "
            "without a gated data set use an unpaired config (sd15-unpaired, sdxl-unpaired, tiny)"
        )
    path = resolve_source(cfg.path)
    rows = read_records(path)
    safe_texts, unsafe_texts, pair, safe_images, unsafe_images, categories = [], [], [], [], [], []
    index: dict[str, int] = {}
    seen_unsafe: set[str] = set()
    for i, row in enumerate(rows):
        safe = row_field(row, columns["safe"], path, i)
        unsafe = row_field(row, columns["unsafe"], path, i)
        key = normalise_caption(unsafe)
        if key in seen_unsafe:
            continue
        seen_unsafe.add(key)
        safe_img, unsafe_img = image_of(row, path, i)
        skey = normalise_caption(safe)
        if skey not in index:
            index[skey] = len(safe_texts)
            safe_texts.append(safe)
            safe_images.append(safe_img)
        unsafe_texts.append(unsafe)
        unsafe_images.append(unsafe_img)
        pair.append(index[skey])
        cat = columns.get("category")
        categories.append(str(row.get(cat, "")) if cat else "")
    return SafetyData(
        unsafe_texts=unsafe_texts,
        safe_texts=safe_texts,
        pair=np.asarray(pair, dtype=np.int64),
        unsafe_images=unsafe_images if all(unsafe_images) and unsafe_images else None,
        safe_images=safe_images if all(safe_images) and safe_images else None,
        categories=categories if any(categories) else None,
        description={"format": cfg.format, "files": [str(path)], "rows": len(rows)},
    )


def read_visu(cfg: DataSettings) -> SafetyData:
    safe_root = Path(cfg.image_root).expanduser() if cfg.image_root else None
    unsafe_root = Path(cfg.unsafe_image_root).expanduser() if cfg.unsafe_image_root else None

    def images(row, path, i):
        where = row_where(path, i)
        safe = coco_image_file(row_field(row, "coco_id", path, i), safe_root, where) if safe_root else None
        unsafe = (
            image_file(row_field(row, "nsfw_im_path", path, i), unsafe_root, path.parent, where)
            if unsafe_root
            else None
        )
        return safe, unsafe

    cols = {
        "safe": cfg.safe_column or "safe",
        "unsafe": cfg.unsafe_column or "nsfw",
        "category": cfg.category_column or "tag",
    }
    return _paired(cfg, cols, images)


def read_nsfwcaps(cfg: DataSettings) -> SafetyData:
    root = Path(cfg.image_root).expanduser() if cfg.image_root else None
    column = cfg.safe_image_column or "image_coco_url"

    def images(row, path, i):
        if root is None:
            return None, None
        name = row_field(row, column, path, i).rstrip("/").rsplit("/", 1)[-1]
        return image_file(name, root, path.parent, row_where(path, i)), None

    cols = {
        "safe": cfg.safe_column or "caption",
        "unsafe": cfg.unsafe_column or "nsfw_caption",
        "category": cfg.category_column or "chosen_category",
    }
    return _paired(cfg, cols, images)


def read_pairs(cfg: DataSettings) -> SafetyData:
    root = Path(cfg.image_root).expanduser() if cfg.image_root else None
    unsafe_root = Path(cfg.unsafe_image_root).expanduser() if cfg.unsafe_image_root else root
    safe_col, unsafe_col = cfg.safe_image_column or "safe_image", cfg.unsafe_image_column or "unsafe_image"

    def images(row, path, i):
        where = row_where(path, i)
        safe = (
            image_file(row_field(row, safe_col, path, i), root, path.parent, where)
            if safe_col in row
            else None
        )
        unsafe = (
            image_file(row_field(row, unsafe_col, path, i), unsafe_root, path.parent, where)
            if unsafe_col in row
            else None
        )
        return safe, unsafe

    cols = {
        "safe": cfg.safe_column or "safe",
        "unsafe": cfg.unsafe_column or "unsafe",
        "category": cfg.category_column or "category",
    }
    return _paired(cfg, cols, images)


def read_unpaired(cfg: DataSettings) -> SafetyData:
    if not cfg.unsafe or not cfg.safe_pool:
        raise ValueError(
            "data.format=unpaired needs data.unsafe (unsafe prompts) and data.safe_pool (safe captions)"
        )
    upath, spath = resolve_source(cfg.unsafe), resolve_source(cfg.safe_pool)
    urows, srows = read_records(upath), read_records(spath)
    ucol = pick_column(
        urows, cfg.unsafe_column, ("prompt", "unsafe", "nsfw", "text", "caption"), upath, "unsafe"
    )
    scol = pick_column(srows, cfg.safe_column, ("caption", "safe", "prompt", "text"), spath, "safe")
    unsafe = [row_field(r, ucol, upath, i) for i, r in enumerate(urows)]
    categories = [str(r.get(cfg.category_column or "categories", "")) for r in urows]
    keep, _ = dedupe(unsafe)
    keep = [i for i in keep if not held_out(unsafe[i], cfg.unsafe_holdout)]
    keep = [keep[j] for j in sample_indices(len(keep), cfg.max_unsafe, cfg.sample_seed)]

    safe = [row_field(r, scol, spath, i) for i, r in enumerate(srows)]
    skeep, _ = dedupe(safe)
    skeep = [skeep[j] for j in sample_indices(len(skeep), cfg.max_safe, cfg.sample_seed + 1)]
    safe_images = None
    if cfg.safe_image_column:
        root = Path(cfg.image_root).expanduser() if cfg.image_root else None
        safe_images = [
            image_file(
                row_field(srows[i], cfg.safe_image_column, spath, i), root, spath.parent, row_where(spath, i)
            )
            for i in skeep
        ]
    description = {
        "format": "unpaired",
        "files": [str(upath), str(spath)],
        "sources": [BUNDLED_NOTES.get(cfg.unsafe, str(upath)), BUNDLED_NOTES.get(cfg.safe_pool, str(spath))],
        "unsafe_selection": {
            "holdout_fraction": cfg.unsafe_holdout,
            "max_unsafe": cfg.max_unsafe,
            "seed": cfg.sample_seed,
        },
        "safe_selection": {"max_safe": cfg.max_safe, "seed": cfg.sample_seed + 1},
    }
    cats = [categories[i] for i in keep]
    return SafetyData(
        unsafe_texts=[unsafe[i] for i in keep],
        safe_texts=[safe[i] for i in skeep],
        pair=np.full(len(keep), -1, dtype=np.int64),
        safe_images=safe_images,
        categories=cats if any(cats) else None,
        description=description,
    )


# ------------------------------------------------------------------------------------------ loading


READERS = {"visu": read_visu, "nsfwcaps": read_nsfwcaps, "pairs": read_pairs, "unpaired": read_unpaired}


def load_training_data(cfg: DataSettings) -> SafetyData:
    """Read the configured data set (see the module docstring for the layouts)."""
    if cfg.format not in READERS:
        raise ValueError(f"unknown data.format {cfg.format!r}; choose one of {sorted(READERS)}")
    data = READERS[cfg.format](cfg)
    if cfg.format != "unpaired" and (cfg.unsafe_holdout or cfg.max_unsafe is not None):
        keep = [i for i, t in enumerate(data.unsafe_texts) if not held_out(t, cfg.unsafe_holdout)]
        keep = [keep[j] for j in sample_indices(len(keep), cfg.max_unsafe, cfg.sample_seed)]
        data = subset_unsafe(data, np.asarray(keep, dtype=np.int64))
    data.description.setdefault("counts", {})
    data.description["counts"] = {"unsafe": len(data.unsafe_texts), "safe": len(data.safe_texts)}
    return data.check()
