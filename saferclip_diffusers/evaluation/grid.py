"""Side-by-side image grids: cached cells on disk, which prompts get a row, and the grid image itself.

Cells are small copies of image 0 of a prompt per system, written while a run generates (``grid_cells/``). They
are a cache: an unreadable cell is removed with a warning (a resumed run regenerates it) and drawn as missing.
:func:`image_grid` takes plain rows and columns, so any runner (I2P, attacks) can draw its grid from its records.
"""

from __future__ import annotations

import logging
import os
import re
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from PIL import Image, ImageDraw, ImageFilter, ImageFont, UnidentifiedImageError

from .metrics import ALL, category_groups

logger = logging.getLogger(__name__)

GRID_DIR = "grid_cells"
GRID_CELL_SIZE = 256


def slug(name: str) -> str:
    """A file-system-safe form of a system name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "system"


def grid_cell_path(directory: str | os.PathLike, system: str, prompt_id: int) -> Path:
    return Path(directory) / GRID_DIR / slug(system) / f"{int(prompt_id):05d}.png"


def grid_cell(image: Image.Image, size: int = GRID_CELL_SIZE) -> Image.Image:
    """The cached copy of an image for the grid (at most ``size`` px on each side)."""
    cell = image.copy()
    cell.thumbnail((size, size))
    return cell


def load_cell(path: Path) -> Image.Image | None:
    """A cell as RGB, or None when missing; an unreadable (corrupt) cell is removed with a warning."""
    if not path.is_file():
        return None
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, UnidentifiedImageError, SyntaxError) as err:
        logger.warning(
            "removed the corrupt grid cell %s (%s); it is a cache: rerun the same command to regenerate it",
            path,
            err,
        )
        path.unlink(missing_ok=True)
        return None


def cell_ok(path: Path) -> bool:
    """Whether a cached cell exists and decodes (a corrupt one is removed, see :func:`load_cell`)."""
    return load_cell(path) is not None


def select_grid_prompts(prompts: pd.DataFrame, n: int) -> list[int]:
    """Up to ``n`` prompt ids, one per category in turn (first unused prompt of each), for the image grid."""
    groups = [g for g in category_groups(prompts["categories"]) if g != ALL] or [ALL]
    chosen: list[int] = []
    while len(chosen) < min(n, len(prompts)):
        added = False
        for group in groups:
            for pid, cats in zip(prompts["prompt_id"], prompts["categories"], strict=True):
                if int(pid) not in chosen and (group == ALL or group in cats):
                    chosen.append(int(pid))
                    added = True
                    break
            if len(chosen) >= n:
                break
        if not added:
            break
    return chosen


def image_grid(
    cells: Sequence[Sequence[Image.Image | None]],
    row_labels: Sequence[str],
    column_labels: Sequence[str],
    flagged: Sequence[Sequence[bool]],
    blur_unsafe: bool = True,
    cell: int = 192,
) -> Image.Image | None:
    """Rows x columns of images with labels; flagged cells are blurred (unless told otherwise) and marked."""
    if not cells or not column_labels:
        return None
    label_w, head_h = 240, 24
    font = ImageFont.load_default()
    grid = Image.new("RGB", (label_w + cell * len(column_labels), head_h + cell * len(cells)), "white")
    draw = ImageDraw.Draw(grid)
    for j, name in enumerate(column_labels):
        draw.text((label_w + j * cell + 4, 6), name[:30], fill="black", font=font)
    for i, (row, label) in enumerate(zip(cells, row_labels, strict=True)):
        y = head_h + i * cell
        draw.multiline_text(
            (4, y + 4), "\n".join(textwrap.wrap(label, 36)[: cell // 14]), fill="black", font=font
        )
        for j, image in enumerate(row):
            if image is None:
                draw.text((label_w + j * cell + 4, y + cell // 2), "(missing)", fill="gray", font=font)
                continue
            tile = image.convert("RGB").resize((cell, cell))
            if flagged[i][j] and blur_unsafe:
                tile = tile.filter(ImageFilter.GaussianBlur(radius=cell / 8))
            grid.paste(tile, (label_w + j * cell, y))
            if flagged[i][j]:
                draw.text(
                    (label_w + j * cell + 4, y + cell - 14),
                    "unsafe (blurred)" if blur_unsafe else "unsafe",
                    fill="red",
                    font=font,
                )
    return grid


def i2p_grid(
    directory: str | os.PathLike,
    systems: Sequence[str],
    flags: pd.DataFrame,
    prompts: pd.DataFrame,
    prompt_ids: Sequence[int],
    blur_unsafe: bool = True,
    cell: int = 192,
) -> Image.Image | None:
    """The grid of an I2P run: rows = prompts, columns = systems (image 0), unsafe or nude cells flagged."""
    loaded = {(pid, s): load_cell(grid_cell_path(directory, s, pid)) for pid in prompt_ids for s in systems}
    rows = [pid for pid in prompt_ids if any(loaded[(pid, s)] is not None for s in systems)]
    if not rows or not systems:
        return None
    text_of = dict(zip(prompts["prompt_id"].map(int), prompts["prompt"], strict=True))
    first = flags[flags["image_index"] == 0].set_index(["prompt_id", "system"])

    def is_flagged(pid: int, system: str) -> bool:
        if (pid, system) not in first.index:
            return False
        return bool(first.loc[(pid, system), "unsafe"] or first.loc[(pid, system), "nude"])

    return image_grid(
        [[loaded[(pid, s)] for s in systems] for pid in rows],
        [f"#{pid}: {text_of.get(pid, '')}" for pid in rows],
        list(systems),
        [[is_flagged(pid, s) for s in systems] for pid in rows],
        blur_unsafe,
        cell,
    )
