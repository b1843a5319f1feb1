"""report.md of an I2P run: settings, per-category tables, paired differences, both SD 1.4 reference columns."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .metrics import ALL


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.1f}"


def _ci(entry: dict[str, float]) -> str:
    return f"{entry['value']:.1f} [{entry['ci_low']:.1f}, {entry['ci_high']:.1f}]"


def _signed(entry: dict[str, float]) -> str:
    return f"{entry['value']:+.1f} [{entry['ci_low']:+.1f}, {entry['ci_high']:+.1f}]"


def _emi(entry: dict[str, Any]) -> str:
    return f"{entry['mean']:.1f} ± {entry['std']:.1f}"


def _describe_system(system: dict[str, Any]) -> str:
    kind = system["kind"]
    if kind == "safe":
        enc = system["safe_text_encoder"] + (
            f" + {system['safe_text_encoder_2']}" if system.get("safe_text_encoder_2") else ""
        )
        return f"`{system['name']}` (safe text encoder {enc})"
    if kind == "negative-prompt":
        return (
            f"`{system['name']}` (negative prompt: SLD safety concept)"
            if system.get("negative_prompt")
            else f"`{system['name']}`"
        )
    if kind == "sld":
        return f"`{system['name']}` (Safe Latent Diffusion {system['sld']})"
    return f"`{system['name']}` (original text encoder)"


def _header(summary: dict[str, Any]) -> list[str]:
    config, scoring, report = summary["config"], summary["scoring"], summary["report"]
    protocol = config["protocol"]
    lines = [
        "# I2P safety evaluation" + (" (NudeNet only: Q16 not run)" if scoring.get("nudenet_only") else ""),
        "",
    ]
    if summary["random_weights"]:
        lines += [
            "> **Random-weight models.** These numbers exercise the pipeline and say nothing about any real model.",
            "",
        ]
    if scoring.get("nudenet_only"):
        lines += [
            "> **NudeNet only.** Q16 was not run, so every 'unsafe' figure below counts nudity alone and is "
            "lower than the SLD protocol's (Q16 or NudeNet). Not comparable with the reference columns.",
            "",
        ]
    if not summary["completeness"]["complete"]:
        c = summary["completeness"]
        lines += [
            f"> **Incomplete run:** {c['found_images']} of {c['expected_images']} images. Rerun the same command to finish.",
            "",
        ]
    small = any(
        g.get("expected_max_inappropriateness", {}).get("k", 25) < report["emi_prompts"]
        for m in summary["metrics"].values()
        for g in m.values()
    )
    lines += [
        f"- Protocol `{protocol['name']}`: base `{config['base']}`, {protocol['num_images_per_prompt']} image(s) per prompt, "
        f"CFG {'per-row CSV guidance (clipped)' if protocol['per_row_guidance'] else protocol['guidance_scale']}, "
        f"{protocol['num_inference_steps']} steps, {protocol['height'] or 'default'}x{protocol['width'] or 'default'} px, "
        f"{config['torch_dtype']}, per-row CSV seed, identical initial latents for every system.",
        f"- Prompts: {config['prompts']['selection']} ({len(config['prompts']['ids'])} prompts).",
        f"- Unsafe = {scoring['unsafe_rule']}; NudeNet preset `{scoring['nudenet_preset']['name']}` "
        f"({len(scoring['nudenet_preset']['classes'])} classes, score >= {scoring['nudenet_preset']['threshold']}); "
        f"nudity rate: `{scoring['nudity_preset']['name']}` ({len(scoring['nudity_preset']['classes'])} classes, "
        f">= {scoring['nudity_preset']['threshold']}).",
        f"- NudeNet {scoring['nudenet'].get('version')} (`{scoring['nudenet'].get('onnx_file')}`, sha256 "
        f"`{str(scoring['nudenet'].get('onnx_sha256'))[:16]}…`)"
        + (f"; Q16 on `{scoring['q16']['clip']}`." if scoring["q16"] else "."),
        "- Systems: " + "; ".join(_describe_system(s) for s in config["systems"]) + ".",
        f"- Intervals: 95% percentile bootstrap over prompts ({report['ci_samples']} resamples); EMI: "
        f"{report['emi_samples']} samples of {report['emi_prompts']} distinct prompt texts (images of repeated texts "
        f"pooled, as the reference code groups by prompt); seed {report['bootstrap_seed']}"
        + (" (groups with fewer texts use all of them: their EMI is simply the maximum)." if small else "."),
        "",
    ]
    return lines


def _table(
    summary: dict[str, Any],
    title: str,
    cell: Callable[[dict[str, Any]], str],
    references: list[tuple[str, dict[str, Any], Callable[[dict[str, Any]], str]]],
) -> list[str]:
    systems = [s for s in summary["systems"] if s in summary["metrics"]]
    refs = [(label, data, fmt) for label, data, fmt in references if data]
    head = ["category", "prompts", *systems, *(label for label, _, _ in refs)]
    rows = [f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for group in summary["groups"]:
        first = next((summary["metrics"][s][group] for s in systems if group in summary["metrics"][s]), None)
        if first is None:
            continue
        cells = [group, str(first["n_prompts"])]
        cells += [
            cell(summary["metrics"][s][group]) if group in summary["metrics"][s] else "–" for s in systems
        ]
        cells += [fmt(data[group]) if group in data else "–" for _, data, fmt in refs]
        rows.append("| " + " | ".join(cells) + " |")
    return rows + [""]


def _readme_cell(value: Callable[[dict[str, Any]], str]) -> Callable[[dict[str, Any]], str]:
    def fmt(entry: dict[str, Any]) -> str:
        text = value(entry)
        if not entry.get("covers_whole_group"):
            text += (
                f" (all {entry['n_prompts_reference']} prompts)"
                if entry.get("n_prompts_reference")
                else " (whole category)"
            )
        return text

    return fmt


def render_markdown(summary: dict[str, Any]) -> str:
    scoring = summary["scoring"]
    only = " — NudeNet only" if scoring.get("nudenet_only") else ""
    csv, readme = summary.get("reference_sd14_csv", {}), summary.get("reference_sd14_readme", {})
    csv_label, readme_label = "SD 1.4 (I2P CSV)", "SD 1.4 (ml-research/i2p README)"
    lines = _header(summary)
    lines += _table(
        summary,
        f"Inappropriate probability (%, 95% CI){only}",
        lambda e: _ci(e["inappropriate_probability"]),
        [
            (csv_label, csv, lambda r: _pct(r["inappropriate_probability"])),
            (readme_label, readme, _readme_cell(lambda r: f"{r['inappropriate_probability']:.2f}")),
        ],
    )
    lines += _table(
        summary,
        f"Expected maximum inappropriateness (%, mean ± std){only}",
        lambda e: _emi(e["expected_max_inappropriateness"]),
        [
            (csv_label, csv, lambda r: _emi(r["expected_max_inappropriateness"])),
            (
                readme_label,
                readme,
                _readme_cell(
                    lambda r: "{mean:.2f} ± {std:.2f}".format(**r["expected_max_inappropriateness"])
                ),
            ),
        ],
    )
    systems = [s for s in summary["systems"] if s in summary["metrics"]]
    if summary["vs_original"]:
        others = [s for s in systems if s in summary["vs_original"]]
        lines += [
            f"## Change in inappropriate probability vs `original` (points, paired 95% CI){only}",
            "",
            "Same prompts and initial latents for every system, so the interval resamples prompts jointly.",
            "",
            "| " + " | ".join(["category", *others]) + " |",
            "|" + "---|" * (len(others) + 1),
        ]
        for group in summary["groups"]:
            cells = [summary["vs_original"][s].get(group) for s in others]
            if any(cells):
                lines.append("| " + " | ".join([group] + [_signed(c) if c else "–" for c in cells]) + " |")
        lines.append("")
    nudity = scoring["nudity_preset"]["name"]
    lines += _table(
        summary,
        f"Nudity rate (%, `{nudity}`, 95% CI)",
        lambda e: _ci(e["nudity_rate"]),
        [
            (
                "SD 1.4 (I2P CSV nudity_percentage, NudeNet v2, its own rule)",
                csv,
                lambda r: _pct(r["nudity_rate"]),
            )
        ],
    )
    lines += _table(
        summary,
        f"NudeNet `{scoring['nudenet_preset']['name']}` / Q16 rates (%)",
        lambda e: f"{e['nudenet_rate']:.1f} / {_pct(e['q16_rate'])}",
        [("SD 1.4 (I2P CSV: – / q16_percentage)", csv, lambda r: f"– / {_pct(r['q16_rate'])}")],
    )
    redirect = [s for s in systems if summary["metrics"][s][ALL].get("redirection_score") is not None]
    if redirect:
        lines += [
            "Mean redirection score cos(original, safe pooled text embedding) over all prompts: "
            + ", ".join(f"`{s}` {summary['metrics'][s][ALL]['redirection_score']:.3f}" for s in redirect)
            + ".",
            "",
        ]
    if csv or readme:
        lines += [
            "Reference columns, for orientation only (NudeNet v3 here, v2 there: the columns are not directly "
            "comparable): **SD 1.4 (I2P CSV)** averages the per-prompt figures shipped in the I2P CSV over the same "
            "prompts (10 images each, lexica settings, Q16 or NudeNet v2; 38.57% over all 4703 prompts, sexual "
            "34.24%); its nudity column is the CSV's `nudity_percentage` under the dataset's own NudeNet v2 rule, not "
            f"`{nudity}`. **SD 1.4 (ml-research/i2p README)** is the fixed table of the reference code's README "
            "(all prompts of the category: 37.75% overall, EMI 97.06 ± 6.24; sexual 28.54%, EMI 86.60 ± 11.51); "
            "'(all N prompts)' marks a row where this run covers fewer prompts.",
            "",
        ]
    lines += [
        "![inappropriate probability per category](categories.png)",
        "",
        "![side-by-side images](grid.png)",
        "",
    ]
    return "\n".join(lines)
