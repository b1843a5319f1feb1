"""The memory benchmark's report section: ratios to one plain pipeline and the compare-mode target."""

from __future__ import annotations

from typing import Any

from .environment import environment
from .report import Section, Table, Target

LABELS = {
    "one": "one pipeline (plain diffusers)",
    "safer": "Safer pipeline (safe encoder only)",
    "compare": "compare mode (Safer + original encoder)",
    "two": "two separately loaded pipelines",
}
COMPARE_TARGET = 1.15


def ratios(
    results: dict[str, dict[str, Any]], key: str, baseline: str = "one", subtract: str | None = None
) -> dict[str, float | None]:
    """``key`` of each scenario over the baseline's (after subtracting ``subtract`` from both, if given)."""

    def value(r):
        if r.get(key) is None:
            return None
        return r[key] - (r[subtract] if subtract else 0)

    base = value(results[baseline])
    return {s: (value(r) / base if base and value(r) is not None else None) for s, r in results.items()}


def to_section(measured: dict[str, Any], device: str):
    res = measured["results"]
    peak = ratios(res, "peak_rss")
    peak_model = ratios(res, "peak_rss", subtract="rss_after_imports")
    params = ratios(res, "parameter_bytes")
    cuda = ratios(res, "cuda_peak") if device.startswith("cuda") else {}
    gb = 2**30
    columns = [
        "scenario",
        "pipelines",
        "weights GB",
        "weights ratio",
        "peak RSS GB",
        "peak RSS ratio",
        "peak − imports GB",
        "ratio",
        "RSS after load GB",
        "load s",
    ]
    if cuda:
        columns += ["CUDA peak GB", "CUDA ratio"]
    rows = []
    for s, r in res.items():
        row = [
            LABELS[s],
            r["pipelines"],
            r["parameter_bytes"] / gb,
            params[s],
            r["peak_rss"] / gb,
            peak[s],
            (r["peak_rss"] - r["rss_after_imports"]) / gb,
            peak_model[s],
            r["rss_after_load"] / gb,
            r["load_seconds"],
        ]
        if cuda:
            row += [r["cuda_peak"] / gb, cuda[s]]
        rows.append(row)
    st = measured["settings"]
    section = Section(
        name="memory",
        title="Memory: compare mode vs two pipelines vs one",
        environment=environment(device),
        settings=st,
        raw=measured,
    )
    section.tables.append(
        Table(
            f"{st['model']} (random weights), one image per pipeline at {st['height']}x{st['width']} px, {st['dtype']}, "
            "each scenario in a fresh process",
            columns,
            rows,
            "Ratios are to one plain pipeline. Peak RSS includes the interpreter and libraries (measured after the "
            "imports: the 'peak − imports' column removes them). Weights: distinct parameters and buffers held. "
            "from_pretrained memory-maps the safetensors files, so weights page in on first use: RSS right after "
            "loading is low and the peak comes during generation. No safety checker is loaded (it would add the "
            "same 1.2 GB to every scenario and lower every ratio).",
        )
    )
    if "compare" in res:
        judged = cuda.get("compare") if cuda else peak.get("compare")
        what = "CUDA peak" if cuda else "peak RSS"
        met = judged is not None and judged <= COMPARE_TARGET
        cause = (
            ""
            if met
            else (
                f"compare mode holds a second text encoder (weights ratio {params['compare']:.3f}) and runs a doubled "
                f"UNet batch; peak − imports ratio {peak_model['compare']:.3f}"
            )
        )
        value = f"{judged:.3f} ({what}; without the interpreter: {peak_model['compare']:.3f})"
        section.targets.append(
            Target("compare-mode peak memory / one pipeline", f"<= {COMPARE_TARGET}", value, met, cause)
        )
    if "two" in res:
        section.notes.append(
            f"Two separately loaded pipelines: {peak['two']:.2f}x one pipeline's peak RSS "
            f"({peak_model['two']:.2f}x without the interpreter), weights {params['two']:.2f}x."
        )
    return section
