"""What an I2P run still has to do: the fixed batch layout, each process's share, the protocol's noise.

Work is cut into fixed batches of ``batch_size`` images (prompt order, image index order) before anything runs,
and batch ``b`` belongs to process ``b % num_processes`` (see :mod:`.runner`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch

from .grid import cell_ok, grid_cell_path, select_grid_prompts
from .protocol import Protocol, RunConfig, SystemSpec

if TYPE_CHECKING:
    from .runner import RunOptions


def plan_batches(prompts: pd.DataFrame, protocol: Protocol, batch_size: int) -> list[list[tuple[int, int]]]:
    """Fixed batches of (row, image_index); with per-row guidance a batch never mixes two CFG scales."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    batches: list[list[tuple[int, int]]] = []
    current: list[tuple[int, int]] = []
    current_cfg = None
    for row in range(len(prompts)):
        cfg = protocol.guidance_for(prompts["guidance"].iloc[row])
        for k in range(protocol.num_images_per_prompt):
            if current and (len(current) == batch_size or cfg != current_cfg):
                batches.append(current)
                current = []
            current.append((row, k))
            current_cfg = cfg
    if current:
        batches.append(current)
    return batches


def initial_latents(seed: int, num_images: int, shape: Sequence[int]) -> torch.Tensor:
    """The protocol's noise for all images of one prompt: float32 from a CPU generator seeded with ``seed``."""
    generator = torch.Generator("cpu").manual_seed(int(seed))
    return torch.randn((num_images, *shape), generator=generator, dtype=torch.float32)


@dataclass
class Work:
    """This process's share: the global batch layout, the (batch, system) pairs still to do, progress counts."""

    batches: list[list[tuple[int, int]]]
    todo: list[tuple[int, SystemSpec]]
    total: int
    done: int
    grid_ids: set[int]


def plan_work(
    config: RunConfig, prompts: pd.DataFrame, options: RunOptions, done: set, rank: int, world: int
) -> Work:
    """The (batch, system) pairs with a missing record, plus those whose grid cell is missing or corrupt (cells are
    a cache: regenerating the batch rewrites the cell; its records exist already and are not written twice)."""
    batches = plan_batches(prompts, config.protocol, config.protocol.batch_size)
    mine = [b for b in range(len(batches)) if b % world == rank]
    ids = [int(i) for i in prompts["prompt_id"]]
    grid_ids = set(select_grid_prompts(prompts, options.report.grid_prompts))
    out = Path(options.output_dir)
    todo = []
    for b in mine:
        for spec in config.systems:
            missing = not all((ids[r], spec.name, k) in done for r, k in batches[b])
            stale = not missing and any(
                k == 0 and ids[r] in grid_ids and not cell_ok(grid_cell_path(out, spec.name, ids[r]))
                for r, k in batches[b]
            )
            if missing or stale:
                todo.append((b, spec))
    total = sum(len(batches[b]) for b in mine) * len(config.systems)
    todo_images = sum(len(batches[b]) for b, _ in todo)
    return Work(batches, todo, total, total - todo_images, grid_ids)
