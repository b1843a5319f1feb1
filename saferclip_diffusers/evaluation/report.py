"""Summaries of an I2P run: summary.json, report.md, the category chart and the image grid.

Everything here reads stored results (records + the prompt snapshot), so a report can be rebuilt, or rescored
with other NudeNet presets, without generating anything. Without Q16 every result is labelled "NudeNet only".
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..io import atomic_save_image, atomic_write_json, atomic_write_text
from ..scoring.nudenet import get_nudity_preset
from .grid import i2p_grid, select_grid_prompts
from .metrics import category_groups, compare_systems, image_flags, summarize_system
from .plots import plot_categories
from .protocol import ReportSpec
from .references import csv_reference, readme_reference
from .report_markdown import render_markdown

SUMMARY_FORMAT = "saferclip-diffusers/i2p-summary/2"
PROMPTS_SNAPSHOT = "prompts.csv"
Q16_RULE = "Q16 or NudeNet"
NUDENET_ONLY_RULE = "NudeNet only (Q16 not run)"


def save_prompt_snapshot(prompts: pd.DataFrame, directory: str | os.PathLike) -> None:
    """The selected prompts (I2P schema, with reference columns), so reports need nothing outside the output dir."""
    snapshot = prompts.rename(
        columns={"prompt_id": "case_number", "seed": "sd_seed", "guidance": "sd_guidance_scale"}
    )
    snapshot["categories"] = [", ".join(c) for c in snapshot["categories"]]
    atomic_write_text(Path(directory) / PROMPTS_SNAPSHOT, snapshot.to_csv(index=False))


def load_prompt_snapshot(directory: str | os.PathLike) -> pd.DataFrame:
    from .prompts import read_prompt_csv

    return read_prompt_csv(Path(directory) / PROMPTS_SNAPSHOT)


def _bundled_i2p(config: dict[str, Any]) -> pd.DataFrame | None:
    """The whole bundled I2P table when the run's prompts come from it (for the README column's coverage)."""
    if not str(config["prompts"].get("selection", "")).startswith("I2P (bundled CSV)"):
        return None
    from .prompts import load_prompts

    return load_prompts()


def build_summary(
    header: dict[str, Any], records: Sequence[dict[str, Any]], prompts: pd.DataFrame, spec: ReportSpec
) -> tuple[dict[str, Any], pd.DataFrame]:
    """(summary dict, per-image flags) for the records under the NudeNet presets and Q16 rule of ``spec``."""
    config = header["config"]
    unsafe_preset = get_nudity_preset(spec.nudenet_preset)
    nudity_preset = get_nudity_preset(spec.nudity_preset)
    text_of = {int(i): str(t) for i, t in zip(prompts["prompt_id"], prompts["prompt"], strict=True)}
    flags = image_flags(records, unsafe_preset, nudity_preset, spec.q16_threshold, prompt_text=text_of)
    systems = [s["name"] for s in config["systems"]]
    groups = category_groups(prompts["categories"])
    has_q16 = bool(config["scoring"].get("q16_clip"))
    rule = Q16_RULE if has_q16 else NUDENET_ONLY_RULE
    expected = len(config["prompts"]["ids"]) * config["protocol"]["num_images_per_prompt"] * len(systems)
    metrics = {}
    for system in systems:
        sub = flags[flags["system"] == system]
        if not sub.empty:
            metrics[system] = summarize_system(
                sub, groups, spec.emi_prompts, spec.emi_samples, spec.ci_samples, spec.bootstrap_seed
            )
            for entry in metrics[system].values():
                entry["unsafe_rule"] = rule
    summary = {
        "format": SUMMARY_FORMAT,
        "fingerprint": header["fingerprint"],
        "config": config,
        "report": dataclasses.asdict(spec),
        "scoring": {
            "unsafe_rule": rule,
            "nudenet_only": not has_q16,
            "nudenet": config["scoring"]["nudenet"],
            "nudenet_preset": unsafe_preset.to_dict(),
            "nudity_preset": nudity_preset.to_dict(),
            "q16": {"clip": config["scoring"]["q16_clip"], "threshold": spec.q16_threshold}
            if has_q16
            else None,
        },
        "random_weights": bool(config.get("random_weights", False)),
        "systems": systems,
        "groups": groups,
        "completeness": {
            "expected_images": expected,
            "found_images": len(records),
            "complete": len(records) == expected,
        },
        "metrics": metrics,
        "vs_original": compare_systems(
            flags, "original", systems, groups, spec.ci_samples, spec.bootstrap_seed
        )
        if len(flags)
        else {},
        "reference_sd14_csv": csv_reference(
            prompts, groups, spec.emi_prompts, spec.emi_samples, spec.bootstrap_seed
        ),
        "reference_sd14_readme": readme_reference(prompts, groups, _bundled_i2p(config)),
    }
    return summary, flags


def console_summary(summary: dict[str, Any]) -> str:
    """A few lines for the terminal: overall IP, EMI and nudity rate per system."""
    from .metrics import ALL

    lines = []
    if summary["random_weights"]:
        lines.append("(tiny random-weight models: these numbers say nothing about real models)")
    if summary["scoring"].get("nudenet_only"):
        lines.append("NUDENET ONLY: Q16 was not run, so 'unsafe' below means NudeNet found nudity")
    if not summary["completeness"]["complete"]:
        c = summary["completeness"]
        lines.append(f"INCOMPLETE: {c['found_images']} of {c['expected_images']} images")
    lines.append(f"{'system':<24} {'IP % [95% CI]':>22} {'EMI %':>14} {'nudity %':>9}")
    for system, groups in summary["metrics"].items():
        e = groups[ALL]
        emi = e["expected_max_inappropriateness"]
        ip = e["inappropriate_probability"]
        interval = f"{ip['value']:.1f} [{ip['ci_low']:.1f}, {ip['ci_high']:.1f}]"
        lines.append(
            f"{system:<24} {interval:>22} {emi['mean']:>6.1f} ± {emi['std']:<5.1f} "
            f"{e['nudity_rate']['value']:>9.1f}"
        )
    lines.append(f"unsafe = {summary['scoring']['unsafe_rule']}")
    return "\n".join(lines)


def write_report(
    directory: str | os.PathLike,
    header: dict[str, Any],
    records: Sequence[dict[str, Any]],
    spec: ReportSpec,
    out_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """summary.json, report.md, categories.png and grid.png in ``out_dir`` (default: the run directory)."""
    directory = Path(directory)
    out = Path(out_dir) if out_dir is not None else directory
    prompts = load_prompt_snapshot(directory)
    summary, flags = build_summary(header, records, prompts, spec)
    atomic_write_json(out / "summary.json", summary, indent=2)
    atomic_write_text(out / "report.md", render_markdown(summary))
    if summary["metrics"]:
        plot_categories(summary, out / "categories.png")
        systems = [s for s in summary["systems"] if s in summary["metrics"]]
        grid = i2p_grid(
            directory,
            systems,
            flags,
            prompts,
            select_grid_prompts(prompts, spec.grid_prompts),
            spec.blur_unsafe,
        )
        if grid is not None:
            atomic_save_image(grid, out / "grid.png")
    return summary
