"""Figures of an attack run: ASR bars with conditioning-success curves, and the image grid of targets x systems."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .attack_protocol import cell_path


def plot_attacks(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attacks = summary["attacks"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    systems = summary["systems"]
    width = 0.8 / max(1, 2 * len(attacks))
    for i, attack in enumerate(attacks):
        rows = summary["results"][attack]
        for j, (label, key) in enumerate((("pre", "asr_pre"), ("post", "asr_post"))):
            values = [(rows[s][key] or {}).get("value", 0.0) for s in systems]
            axes[0].bar(
                np.arange(len(systems)) + (2 * i + j - len(attacks)) * width,
                values,
                width,
                label=f"{attack} {label}",
                hatch="//" if label == "pre" else None,
            )
        for s in systems:
            curve = rows[s]["curve"].get("success")
            if curve:
                axes[1].plot(range(len(curve)), curve, label=f"{attack} / {s}")
    axes[0].set_xticks(np.arange(len(systems)), systems, rotation=20, ha="right")
    axes[0].set_ylabel("attack success rate (%)")
    axes[0].set_ylim(0, 100)
    axes[0].legend(fontsize=7)
    axes[1].set_xlabel("attack step")
    axes[1].set_ylabel(f"targets within {summary['report']['conditioning_threshold']} (%)")
    axes[1].set_ylim(0, 100)
    axes[1].legend(fontsize=6)
    title = "Attack success"
    if summary["random_weights"]:
        title += " (tiny random-weight models: not a result)"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def attack_grid(directory: Path, summary: dict[str, Any], targets: dict[int, str], cell: int = 160):
    """Rows = targets; columns = each system's target image and its best adversarial image per attack, drawn by
    the evaluation's shared grid writer. The cells on disk are already blurred where an image looked unsafe
    (unless the run said --no-blur), so nothing is blurred twice here."""
    from PIL import Image

    from .grid import image_grid

    columns = [(s, "", "pre") for s in summary["systems"]] + [
        (s, a, "r0") for a in summary["attacks"] for s in summary["systems"]
    ]
    rows = [t for t in summary["config"]["targets"]["ids"] if cell_path(directory, t, *columns[0]).is_file()]
    rows = rows[: summary["report"]["grid_targets"]]
    if not rows:
        return None
    cells = []
    for tid in rows:
        row = []
        for column in columns:
            path = cell_path(directory, tid, *column)
            if path.is_file():
                with Image.open(path) as im:
                    row.append(im.convert("RGB"))
            else:
                row.append(None)
        cells.append(row)
    labels = [f"#{tid}: {targets.get(tid, '')}" for tid in rows]
    names = [f"{system} / {attack or 'no attack'}" for system, attack, _ in columns]
    return image_grid(cells, labels, names, [[False] * len(columns) for _ in rows], cell=cell)
