"""Benchmark results as JSON and markdown: one section per benchmark family, merged into one report.

``latest.json`` holds every section that has been run (a run of some families replaces only those sections,
so families can be run at different times); ``latest.md`` is rendered from it. Both are written atomically
(temporary file + ``os.replace``) after each family, so an interrupted run keeps what it finished.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .environment import describe

SCHEMA_VERSION = 1


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]]
    note: str = ""


@dataclass
class Target:
    """A stated target and whether it was met; ``cause`` explains a miss (or why it cannot be judged)."""

    name: str
    target: str
    value: str
    met: bool | None  # None: not measurable here (e.g. within noise, or the part was not run)
    cause: str = ""


@dataclass
class Section:
    name: str  # key in latest.json: generation, memory, training, evaluation
    title: str
    environment: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; results are for everyone to read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_report(path: str | os.PathLike) -> dict[str, Any]:
    """The report at ``path`` (a fresh empty one if the file does not exist)."""
    path = Path(path)
    if not path.is_file():
        return {"schema": SCHEMA_VERSION, "sections": {}}
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("schema") != SCHEMA_VERSION or not isinstance(data.get("sections"), dict):
        raise ValueError(
            f"{path} is not a benchmark report of schema {SCHEMA_VERSION}; move it away and rerun"
        )
    return data


def write_section(out_dir: str | os.PathLike, section: Section, stem: str = "latest") -> tuple[Path, Path]:
    """Merge ``section`` into ``<out_dir>/<stem>.json`` (replacing the section of the same name) and re-render
    ``<stem>.md``. Returns both paths."""
    out_dir = Path(out_dir)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    report = load_report(json_path)
    report["sections"][section.name] = asdict(section)
    report["updated"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    _atomic_write(json_path, json.dumps(report, indent=1, default=_json_default) + "\n")
    _atomic_write(md_path, render_markdown(report))
    return json_path, md_path


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    return str(obj)


# ----------------------------------------------------------------------------------------------- markdown

ORDER = ("generation", "memory", "training", "evaluation")


def fmt(value: Any) -> str:
    """Numbers with 3 significant digits (ratios 3 decimals), everything else as text; None as a dash."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}" if abs(value) < 1e-2 else f"{value:.3f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(columns: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(fmt(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return lines


def _verdict(met: bool | None) -> str:
    return {True: "**met**", False: "**missed**", None: "not judged"}[met]


def render_markdown(report: dict[str, Any]) -> str:
    sections = report["sections"]
    names = [n for n in ORDER if n in sections] + sorted(n for n in sections if n not in ORDER)
    lines = [
        "# saferclip-diffusers benchmarks",
        "",
        "Written by `python bench/run.py` (do not edit by hand). Real-size architectures with **random weights** "
        "(built offline from the public configs): the timings and memory are those of the real architectures on "
        "the machine named in each section; the images are noise and say nothing about quality or safety.",
        "",
        "## Targets",
        "",
    ]
    rows = [
        [t["name"], t["target"], t["value"], _verdict(t["met"]), t["cause"]]
        for n in names
        for t in sections[n]["targets"]
    ]
    lines += (
        _table(["target", "wanted", "measured", "verdict", "cause / comment"], rows)
        if rows
        else ["(none run)"]
    )
    for name in names:
        sec = sections[name]
        lines += [
            "",
            f"## {sec['title']}",
            "",
            f"Machine: {describe(sec['environment'])}. "
            f"Run {sec['environment']['timestamp']}, commit {sec['environment'].get('git_commit') or '?'}.",
            "",
        ]
        if sec["settings"]:
            lines += [
                "Settings: " + ", ".join(f"{k} = {fmt(v)}" for k, v in sec["settings"].items()) + ".",
                "",
            ]
        for table in sec["tables"]:
            lines += [f"**{table['title']}**", ""] + _table(table["columns"], table["rows"])
            lines += ["", table["note"], ""] if table["note"] else [""]
        for note in sec["notes"]:
            lines.append(f"- {note}")
    return "\n".join(lines).rstrip() + "\n"
