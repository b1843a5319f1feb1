"""Summaries and reports of an I2P run: summary JSON, markdown tables, per-category bar chart, image grid.

Everything here reads stored results (records + the prompt snapshot), so a report can be rebuilt, or rescored
with other NudeNet presets, without generating anything.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import tempfile
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from ..scoring.nudenet import get_nudity_preset
from .metrics import ALL, category_groups, compare_systems, image_flags, reference_summary, summarize_system
from .protocol import ReportSpec

logger = logging.getLogger(__name__)

SUMMARY_FORMAT = "saferclip-diffusers/i2p-summary/1"
PROMPTS_SNAPSHOT = "prompts.csv"
GRID_DIR = "grid_cells"


# ----------------------------------------------------------------------------------------------- files


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save_image(image: Image.Image, path: Path) -> None:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


def slug(name: str) -> str:
    """A file-system-safe form of a system name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "system"


def grid_cell_path(directory: str | os.PathLike, system: str, prompt_id: int) -> Path:
    return Path(directory) / GRID_DIR / slug(system) / f"{int(prompt_id):05d}.png"


def save_prompt_snapshot(prompts: pd.DataFrame, directory: str | os.PathLike) -> None:
    """The selected prompts (I2P schema, with reference columns), so reports need nothing outside the output dir."""
    snapshot = prompts.rename(columns={"prompt_id": "case_number", "seed": "sd_seed", "guidance": "sd_guidance_scale"})
    snapshot["categories"] = [", ".join(c) for c in snapshot["categories"]]
    atomic_write_bytes(Path(directory) / PROMPTS_SNAPSHOT, snapshot.to_csv(index=False).encode("utf-8"))


def load_prompt_snapshot(directory: str | os.PathLike) -> pd.DataFrame:
    from .prompts import read_prompt_csv

    return read_prompt_csv(Path(directory) / PROMPTS_SNAPSHOT)


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


# ----------------------------------------------------------------------------------------------- summary


def build_summary(header: dict[str, Any], records: Sequence[dict[str, Any]], prompts: pd.DataFrame,
                  spec: ReportSpec) -> tuple[dict[str, Any], pd.DataFrame]:
    """(summary dict, per-image flags) for the records under the NudeNet presets and Q16 rule of ``spec``."""
    config = header["config"]
    unsafe_preset = get_nudity_preset(spec.nudenet_preset)
    nudity_preset = get_nudity_preset(spec.nudity_preset)
    flags = image_flags(records, unsafe_preset, nudity_preset, spec.q16_threshold)
    systems = [s["name"] for s in config["systems"]]
    groups = category_groups(prompts["categories"])
    has_q16 = bool(config["scoring"].get("q16_clip"))
    expected = len(config["prompts"]["ids"]) * config["protocol"]["num_images_per_prompt"] * len(systems)
    metrics = {}
    for system in systems:
        sub = flags[flags["system"] == system]
        if not sub.empty:
            metrics[system] = summarize_system(sub, groups, spec.emi_prompts, spec.emi_samples, spec.ci_samples,
                                               spec.bootstrap_seed)
    summary = {
        "format": SUMMARY_FORMAT,
        "fingerprint": header["fingerprint"],
        "config": config,
        "report": dataclasses.asdict(spec),
        "scoring": {
            "unsafe_rule": "Q16 or NudeNet" if has_q16 else "NudeNet only (Q16 not run: no CLIP ViT-L/14 given)",
            "nudenet": config["scoring"]["nudenet"],
            "nudenet_preset": unsafe_preset.to_dict(),
            "nudity_preset": nudity_preset.to_dict(),
            "q16": {"clip": config["scoring"]["q16_clip"], "threshold": spec.q16_threshold} if has_q16 else None,
        },
        "random_weights": config["protocol"]["model"].startswith("tiny"),
        "systems": systems,
        "groups": groups,
        "completeness": {"expected_images": expected, "found_images": len(records), "complete": len(records) == expected},
        "metrics": metrics,
        "vs_original": compare_systems(flags, "original", systems, groups, spec.ci_samples, spec.bootstrap_seed)
        if len(flags) else {},
        "reference_sd14": reference_summary(prompts, groups, spec.emi_prompts, spec.emi_samples, spec.bootstrap_seed),
    }
    return summary, flags


# ----------------------------------------------------------------------------------------------- markdown


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.1f}"


def _ci(entry: dict[str, float]) -> str:
    return f"{entry['value']:.1f} [{entry['ci_low']:.1f}, {entry['ci_high']:.1f}]"


def _signed(entry: dict[str, float]) -> str:
    return f"{entry['value']:+.1f} [{entry['ci_low']:+.1f}, {entry['ci_high']:+.1f}]"


def render_markdown(summary: dict[str, Any]) -> str:
    config = summary["config"]
    protocol = config["protocol"]
    systems = [s for s in summary["systems"] if s in summary["metrics"]]
    ref = summary["reference_sd14"]
    scoring = summary["scoring"]
    lines = ["# I2P safety evaluation", ""]
    if summary["random_weights"]:
        lines += ["> **Tiny random-weight models.** These numbers exercise the pipeline and say nothing about any real model.", ""]
    if not summary["completeness"]["complete"]:
        c = summary["completeness"]
        lines += [f"> **Incomplete run:** {c['found_images']} of {c['expected_images']} images. Rerun the same command to finish.", ""]
    height = protocol["height"] or "default"
    lines += [
        f"- Protocol `{protocol['name']}`: base `{config['base']}`, {protocol['num_images_per_prompt']} image(s) per prompt, "
        f"CFG {'per-row CSV guidance (clipped)' if protocol['per_row_guidance'] else protocol['guidance_scale']}, "
        f"{protocol['num_inference_steps']} steps, {height}x{protocol['width'] or 'default'} px, {config['torch_dtype']}, "
        "per-row CSV seed, identical initial latents for every system.",
        f"- Prompts: {config['prompts']['selection']} ({len(config['prompts']['ids'])} prompts).",
        f"- Unsafe = {scoring['unsafe_rule']}; NudeNet preset `{scoring['nudenet_preset']['name']}` "
        f"({len(scoring['nudenet_preset']['classes'])} classes, score >= {scoring['nudenet_preset']['threshold']}); "
        f"nudity rate: `{scoring['nudity_preset']['name']}` ({len(scoring['nudity_preset']['classes'])} classes, "
        f">= {scoring['nudity_preset']['threshold']}).",
        f"- NudeNet {scoring['nudenet'].get('version')} (`{scoring['nudenet'].get('onnx_file')}`, sha256 "
        f"`{str(scoring['nudenet'].get('onnx_sha256'))[:16]}…`)" + (f"; Q16 on `{scoring['q16']['clip']}`." if scoring["q16"] else "."),
        "- Systems: " + "; ".join(_describe_system(s) for s in config["systems"]) + ".",
        f"- Intervals: 95% percentile bootstrap over prompts ({summary['report']['ci_samples']} resamples); EMI: "
        f"{summary['report']['emi_samples']} samples of {summary['report']['emi_prompts']} prompts; seed {summary['report']['bootstrap_seed']}"
        + (" (groups with fewer prompts use all of them: their EMI is simply the maximum)."
           if any(g.get("expected_max_inappropriateness", {}).get("k", 25) < summary["report"]["emi_prompts"]
                  for m in summary["metrics"].values() for g in m.values()) else "."),
        "",
    ]
    ref_note = ("SD 1.4 (I2P CSV)" if ref else None)

    def table(title: str, cell, ref_cell) -> list[str]:
        head = ["category", "prompts", *systems] + ([ref_note] if ref_note else [])
        rows = [f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for group in summary["groups"]:
            first = next((summary["metrics"][s][group] for s in systems if group in summary["metrics"][s]), None)
            if first is None:
                continue
            cells = [group, str(first["n_prompts"])]
            cells += [cell(summary["metrics"][s][group]) if group in summary["metrics"][s] else "–" for s in systems]
            if ref_note:
                cells.append(ref_cell(ref[group]) if group in ref else "–")
            rows.append("| " + " | ".join(cells) + " |")
        return rows + [""]

    lines += table("Inappropriate probability (%, 95% CI)", lambda e: _ci(e["inappropriate_probability"]),
                   lambda r: _pct(r["inappropriate_probability"]))
    lines += table("Expected maximum inappropriateness (%, mean ± std)",
                   lambda e: f"{e['expected_max_inappropriateness']['mean']:.1f} ± {e['expected_max_inappropriateness']['std']:.1f}",
                   lambda r: f"{r['expected_max_inappropriateness']['mean']:.1f} ± {r['expected_max_inappropriateness']['std']:.1f}")
    if summary["vs_original"]:
        others = [s for s in systems if s in summary["vs_original"]]
        head = ["category", *others]
        lines += ["## Change in inappropriate probability vs `original` (points, paired 95% CI)", "",
                  "Same prompts and initial latents for every system, so the interval resamples prompts jointly.", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for group in summary["groups"]:
            cells = [summary["vs_original"][s].get(group) for s in others]
            if any(cells):
                lines.append("| " + " | ".join([group] + [_signed(c) if c else "–" for c in cells]) + " |")
        lines.append("")
    lines += table(f"Nudity rate (%, `{scoring['nudity_preset']['name']}`, 95% CI)", lambda e: _ci(e["nudity_rate"]),
                   lambda r: _pct(r["nudity_rate"]))
    lines += table(f"NudeNet `{scoring['nudenet_preset']['name']}` / Q16 rates (%)",
                   lambda e: f"{e['nudenet_rate']:.1f} / {_pct(e['q16_rate'])}",
                   lambda r: f"– / {_pct(r['q16_rate'])}")
    redirect = [s for s in systems if summary["metrics"][s][ALL].get("redirection_score") is not None]
    if redirect:
        lines += ["Mean redirection score cos(original, safe pooled text embedding) over all prompts: "
                  + ", ".join(f"`{s}` {summary['metrics'][s][ALL]['redirection_score']:.3f}" for s in redirect) + ".", ""]
    if ref:
        lines += [
            "The SD 1.4 column repeats the I2P CSV's own figures for the same prompts (10 images each, NudeNet v2 + Q16, "
            "lexica settings) for orientation only: NudeNet v3 is a different detector, so the columns are not "
            "directly comparable.",
            "",
        ]
    lines += ["![inappropriate probability per category](categories.png)", "", "![side-by-side images](grid.png)", ""]
    return "\n".join(lines)


def _describe_system(system: dict[str, Any]) -> str:
    kind = system["kind"]
    if kind == "safe":
        enc = system["safe_text_encoder"] + (f" + {system['safe_text_encoder_2']}" if system.get("safe_text_encoder_2") else "")
        return f"`{system['name']}` (safe text encoder {enc})"
    if kind == "negative-prompt":
        return f"`{system['name']}` (negative prompt: SLD safety concept)" if system.get("negative_prompt") else f"`{system['name']}`"
    if kind == "sld":
        return f"`{system['name']}` (Safe Latent Diffusion {system['sld']})"
    return f"`{system['name']}` (original text encoder)"


def console_summary(summary: dict[str, Any]) -> str:
    """A few lines for the terminal: overall IP, EMI and nudity rate per system."""
    lines = []
    if summary["random_weights"]:
        lines.append("(tiny random-weight models: these numbers say nothing about real models)")
    if not summary["completeness"]["complete"]:
        c = summary["completeness"]
        lines.append(f"INCOMPLETE: {c['found_images']} of {c['expected_images']} images")
    lines.append(f"{'system':<24} {'IP % [95% CI]':>22} {'EMI %':>14} {'nudity %':>9}")
    for system, groups in summary["metrics"].items():
        e = groups[ALL]
        emi = e["expected_max_inappropriateness"]
        lines.append(f"{system:<24} {_ci(e['inappropriate_probability']):>22} "
                     f"{emi['mean']:>6.1f} ± {emi['std']:<5.1f} {e['nudity_rate']['value']:>9.1f}")
    lines.append(f"unsafe = {summary['scoring']['unsafe_rule']}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- figures


def plot_categories(summary: dict[str, Any], path: Path) -> None:
    """Grouped bars: inappropriate probability per category and system (95% CI), SD 1.4 CSV reference as outlines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    systems = [s for s in summary["systems"] if s in summary["metrics"]]
    groups = summary["groups"]
    ref = summary["reference_sd14"]
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
        ax.bar(x + (len(systems) - (n_bars - 1) / 2) * width, values, width, fill=False, hatch="//",
               edgecolor="black", label="SD 1.4 (I2P CSV)")
    ax.set_xticks(x, groups, rotation=20, ha="right")
    ax.set_ylabel("inappropriate probability (%)")
    ax.set_ylim(0, 100)
    title = f"I2P, unsafe = {summary['scoring']['unsafe_rule']}"
    if summary["random_weights"]:
        title += "\n(tiny random-weight models: not a result)"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def image_grid(directory: str | os.PathLike, summary: dict[str, Any], flags: pd.DataFrame, prompts: pd.DataFrame,
               prompt_ids: Sequence[int], blur_unsafe: bool = True, cell: int = 192) -> Image.Image | None:
    """Rows = prompts, columns = systems (image 0 of each); unsafe or nude cells blurred unless told otherwise."""
    systems = [s for s in summary["systems"] if s in summary["metrics"]]
    rows = [pid for pid in prompt_ids if any(grid_cell_path(directory, s, pid).is_file() for s in systems)]
    if not rows or not systems:
        return None
    label_w, head_h = 240, 24
    font = ImageFont.load_default()
    grid = Image.new("RGB", (label_w + cell * len(systems), head_h + cell * len(rows)), "white")
    draw = ImageDraw.Draw(grid)
    for j, system in enumerate(systems):
        draw.text((label_w + j * cell + 4, 6), system[:30], fill="black", font=font)
    text_of = dict(zip(prompts["prompt_id"].map(int), prompts["prompt"], strict=True))
    lookup = flags[flags["image_index"] == 0].set_index(["prompt_id", "system"])
    for i, pid in enumerate(rows):
        y = head_h + i * cell
        wrapped = textwrap.wrap(f"#{pid}: {text_of.get(pid, '')}", 36)[: cell // 14]
        draw.multiline_text((4, y + 4), "\n".join(wrapped), fill="black", font=font)
        for j, system in enumerate(systems):
            path = grid_cell_path(directory, system, pid)
            if not path.is_file():
                continue
            with Image.open(path) as im:
                tile = im.convert("RGB").resize((cell, cell))
            flagged = (pid, system) in lookup.index and bool(
                lookup.loc[(pid, system), "unsafe"] or lookup.loc[(pid, system), "nude"]
            )
            if flagged and blur_unsafe:
                tile = tile.filter(ImageFilter.GaussianBlur(radius=cell / 8))
            grid.paste(tile, (label_w + j * cell, y))
            if flagged:
                ImageDraw.Draw(grid).text((label_w + j * cell + 4, y + cell - 14),
                                          "unsafe (blurred)" if blur_unsafe else "unsafe", fill="red", font=font)
    return grid


def write_report(directory: str | os.PathLike, header: dict[str, Any], records: Sequence[dict[str, Any]],
                 spec: ReportSpec, out_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """summary.json, report.md, categories.png and grid.png in ``out_dir`` (default: the run directory)."""
    directory = Path(directory)
    out = Path(out_dir) if out_dir is not None else directory
    prompts = load_prompt_snapshot(directory)
    summary, flags = build_summary(header, records, prompts, spec)
    atomic_write_bytes(out / "summary.json", (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    atomic_write_bytes(out / "report.md", render_markdown(summary).encode("utf-8"))
    if summary["metrics"]:
        plot_categories(summary, out / "categories.png")
        grid = image_grid(directory, summary, flags, prompts, select_grid_prompts(prompts, spec.grid_prompts),
                          spec.blur_unsafe)
        if grid is not None:
            atomic_save_image(grid, out / "grid.png")
    return summary
