"""Readers of the prompt and caption files the tools share (one reader per format).

``read_coco_captions``: the COCO-30k prompt list (``prompt``, ``evaluation_seed``, optional ``image_id``; the
bundled ``data/coco/coco_30k.csv`` from ESD) -- used by the utility evaluation (CLIP score, FID), and meant for
every other reader of COCO captions (the demo's caption index, training's ``bundled:coco``).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from .data import COCO_30K_CSV


@dataclass(frozen=True)
class Caption:
    """One COCO caption with its evaluation seed (``index`` = its row in the file, from 0)."""

    index: int
    image_id: str
    prompt: str
    seed: int


def read_coco_captions(path: str | os.PathLike = COCO_30K_CSV, limit: int | None = None) -> list[Caption]:
    """The first ``limit`` rows (all when None) of a CSV with ``prompt`` and ``evaluation_seed`` columns."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"caption file not found: {path}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    captions = []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"prompt", "evaluation_seed"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}; columns are {reader.fieldnames}")
        for i, row in enumerate(reader):
            if limit is not None and i >= limit:
                break
            try:
                seed = int(row["evaluation_seed"])
            except ValueError as err:
                raise ValueError(f"{path}: row {i + 1}: evaluation_seed {row['evaluation_seed']!r} is not an integer") from err
            if not (row["prompt"] or "").strip():
                raise ValueError(f"{path}: row {i + 1}: empty prompt")
            captions.append(Caption(i, str(row.get("image_id") or i), row["prompt"].strip(), seed))
    return captions
