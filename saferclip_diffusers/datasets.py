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
                raise ValueError(
                    f"{path}: row {i + 1}: evaluation_seed {row['evaluation_seed']!r} is not an integer"
                ) from err
            if not (row["prompt"] or "").strip():
                raise ValueError(f"{path}: row {i + 1}: empty prompt")
            captions.append(Caption(i, str(row.get("image_id") or i), row["prompt"].strip(), seed))
    return captions


# ------------------------------------------------------------------------------------------- safe/unsafe pairs
# ViSU (Safe-CLIP) and NSFW-Caps (SafeR-CLIP) layouts: one set of rules for training and the retrieval evaluation.

VISU_FIELDS = {
    "safe": "safe",
    "unsafe": "nsfw",
    "coco_id": "coco_id",
    "unsafe_image": "nsfw_im_path",
    "category": "tag",
}
"""ViSU's field names (``aimagelab/safe-clip`` ``training/dataset/visu.py``)."""

NSFWCAPS_COLUMNS: dict[str, tuple[str, ...]] = {
    "safe_caption": ("caption", "safe_caption", "safe"),
    "unsafe_caption": ("nsfw_caption", "unsafe_caption", "nsfw"),
    "safe_image": (
        "image",
        "image_path",
        "safe_image",
        "file_name",
        "image_file",
        "image_coco_url",
        "image_url",
    ),
    "unsafe_image": ("nsfw_image", "nsfw_image_path", "unsafe_image", "nsfw_im_path"),
    "category": ("chosen_category", "category", "tag"),
}
"""NSFW-Caps-layout column names, first match wins (the HF release: caption / nsfw_caption / image_coco_url /
chosen_category)."""

COCO_SPLITS = ("train2017", "val2017", "test2017")


def record_location(path: str | os.PathLike, i: int) -> str:
    """A human pointer to record ``i`` (0-based) of ``path``: CSV line numbers count the header."""
    suffix = Path(path).suffix.lower()
    if suffix in (".csv", ".tsv"):
        return f"{path}, row {i + 1} (line {i + 2})"
    if suffix in (".jsonl", ".txt"):
        return f"{path}, line {i + 1}"
    return f"{path}, record {i}"


def read_records(path: str | os.PathLike) -> list[dict]:
    """Rows of a CSV/TSV, JSON (a list, ``{"data": ...}`` or ViSU's ``{"0": {...}, ...}``), JSONL, parquet or TXT
    (``{"text": line}``) file, as dicts of the file's values (CSV values as strings)."""
    import json

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        with path.open(newline="", encoding="utf-8") as f:
            return [dict(r) for r in csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")]
    if suffix == ".parquet":
        import pandas as pd

        return pd.read_parquet(path).to_dict("records")
    if suffix == ".jsonl":
        rows = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}, line {n + 1}: invalid JSON ({err})") from err
        return rows
    if suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "data" in data:
            data = data["data"]
        if isinstance(data, dict):  # ViSU's {"0": {...}, "1": {...}}
            data = [
                data[k] for k in sorted(data, key=lambda k: (0, int(k)) if str(k).isdigit() else (1, str(k)))
            ]
        if not isinstance(data, list):
            raise ValueError(
                f"{path}: expected a list of records, a {{'data': ...}} object or a {{id: record}} object"
            )
        return data
    if suffix == ".txt":
        return [
            {"text": line.strip()} for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
        ]
    raise ValueError(
        f"{path}: unsupported file type {suffix!r} (use .csv, .tsv, .json, .jsonl, .parquet or .txt)"
    )


def required_field(row: dict, name: str, where: str, hint: str = "") -> str:
    """``row[name]`` as stripped text; a missing or empty value is an error naming the record."""
    value = row.get(name)
    if value is None or (isinstance(value, float) and value != value) or str(value).strip() == "":
        raise ValueError(f"{where}: missing field {name!r} ({hint or f'columns: {sorted(row)}'})")
    return str(value).strip()


def coco_image_name(coco_id: str | int) -> str:
    """``123`` / ``"123"`` / ``"123.0"`` -> ``000000000123.jpg``; a file name is kept as it is."""
    text = str(coco_id).strip()
    return f"{int(float(text)):012d}.jpg" if text.replace(".", "", 1).isdigit() else text


def coco_image_path(image_root: str | os.PathLike, coco_id: str | int) -> Path | None:
    """``{root}/{train,val,test}2017/{id:012d}.jpg`` or ``{root}/{id:012d}.jpg`` (the first that exists)."""
    root, name = Path(image_root).expanduser(), coco_image_name(coco_id)
    for candidate in [root / split / name for split in COCO_SPLITS] + [root / name]:
        if candidate.is_file():
            return candidate
    return None


def image_path(value: str, root: str | os.PathLike | None, base: str | os.PathLike) -> Path:
    """Where an image named in a data file lies: a URL -> its file name under ``root``; a relative path -> under
    ``root`` (default ``base``, the data file's folder); an absolute path that does not exist here (e.g. the
    authors' cluster paths in ViSU) -> its file name under ``root``. The caller checks that it exists."""
    from urllib.parse import urlparse

    folder = Path(root).expanduser() if root is not None else Path(base)
    if value.startswith(("http://", "https://")):
        return folder / Path(urlparse(value).path).name
    path = Path(value).expanduser()
    if path.is_absolute():
        return path if path.is_file() or root is None else folder / path.name
    return folder / path


def resolve_nsfwcaps_columns(
    rows: list[dict],
    path: str | os.PathLike,
    columns: dict[str, str] | None = None,
    required: tuple[str, ...] = ("safe_caption", "unsafe_caption"),
) -> dict[str, str | None]:
    """The column of each NSFW-Caps role (``columns`` overrides the aliases); a missing required role is an error."""
    keys = set().union(*(r.keys() for r in rows[:100])) if rows else set()
    resolved: dict[str, str | None] = {}
    for role, aliases in NSFWCAPS_COLUMNS.items():
        wanted = (columns or {}).get(role)
        if wanted is not None and rows and wanted not in keys:
            raise ValueError(
                f"{path}: column {wanted!r} (given for {role}) not found; columns are {sorted(keys)}"
            )
        resolved[role] = wanted or next((a for a in aliases if a in keys), None)
    for role in required:
        if resolved[role] is None:
            raise ValueError(
                f"{path}: no column for {role} (looked for {', '.join(NSFWCAPS_COLUMNS[role])}); columns are "
                f"{sorted(keys)}. Name it (--column {role}=NAME, or the data config's column settings)"
            )
    return resolved
