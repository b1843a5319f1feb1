"""The per-category bar chart of an I2P run (matplotlib, written atomically)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ..io import atomic_write_bytes


def plot_categories(summary: dict[str, Any], path: Path) -> None:
    """Grouped bars: inappropriate probability per category and system (95% CI), SD 1.4 CSV reference as outlines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    systems = [s for s in summary["systems"] if s in summary["metrics"]]
    groups = summary["groups"]
    ref = summary.get("reference_sd14_csv", {})
    n_bars = len(systems) + (1 if ref else 0)
    width = 0.8 / max(n_bars, 1)
    x = np.arange(len(groups))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(groups) * max(1, n_bars) / 2 + 2), 4.2))
    for i, system in enumerate(systems):
        values, low, high = [], [], []
        for g in groups:
            e = summary["metrics"][system].get(g, {}).get("inappropriate_probability")
            values.append(e["value"] if e else np.nan)
            low.append(e["value"] - e["ci_low"] if e else 0)
            high.append(e["ci_high"] - e["value"] if e else 0)
        ax.bar(x + (i - (n_bars - 1) / 2) * width, values, width, yerr=[low, high], capsize=2, label=system)
    if ref:
        values = [ref.get(g, {}).get("inappropriate_probability", np.nan) for g in groups]
        ax.bar(
            x + (len(systems) - (n_bars - 1) / 2) * width,
            values,
            width,
            fill=False,
            hatch="//",
            edgecolor="black",
            label="SD 1.4 (I2P CSV figures)",
        )
    ax.set_xticks(x, groups, rotation=20, ha="right")
    ax.set_ylabel("inappropriate probability (%)")
    ax.set_ylim(0, 100)
    title = f"I2P, unsafe = {summary['scoring']['unsafe_rule']}"
    if summary["scoring"].get("nudenet_only"):
        title += " -- NudeNet-only result"
    if summary["random_weights"]:
        title += "\n(random-weight models: not a result)"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
