"""Original-vs-safe comparison tables, written as markdown and JSON (atomically).

Each row holds one metric measured with the original model and with the safe one; the difference column is
``safe - original`` (in the metric's own unit, e.g. percentage points for recall and accuracy).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..io import atomic_write_json, atomic_write_text


def _number(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


@dataclass
class ComparisonRow:
    """One metric, original vs safe. ``group`` (e.g. a data set or category) is optional; ``n`` the sample size."""

    metric: str
    original: float | None
    safe: float | None
    group: str | None = None
    n: int | None = None

    def __post_init__(self) -> None:
        self.original, self.safe = _number(self.original), _number(self.safe)

    @property
    def difference(self) -> float | None:
        if self.original is None or self.safe is None:
            return None
        return self.safe - self.original


@dataclass
class ComparisonTable:
    """A titled list of :class:`ComparisonRow` plus free-form ``meta`` (models, data, settings, notes)."""

    title: str
    rows: list[ComparisonRow] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def add(
        self,
        metric: str,
        original: float | None,
        safe: float | None,
        group: str | None = None,
        n: int | None = None,
    ) -> ComparisonRow:
        row = ComparisonRow(metric, original, safe, group, n)
        self.rows.append(row)
        return row

    def row(self, metric: str, group: str | None = None) -> ComparisonRow:
        for r in self.rows:
            if r.metric == metric and r.group == group:
                return r
        raise KeyError(f"no row {metric!r}" + (f" in group {group!r}" if group else ""))

    def to_dict(self) -> dict[str, Any]:
        rows = [{**asdict(r), "difference": r.difference} for r in self.rows]
        return {"title": self.title, "difference": "safe - original", "meta": self.meta, "rows": rows}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ComparisonTable:
        rows = [
            ComparisonRow(r["metric"], r["original"], r["safe"], r.get("group"), r.get("n"))
            for r in data["rows"]
        ]
        return cls(data["title"], rows, dict(data.get("meta", {})))

    def to_markdown(self, decimals: int = 2) -> str:
        def fmt(v: float | None, signed: bool = False) -> str:
            if v is None:
                return "n/a"
            return f"{v:+.{decimals}f}" if signed else f"{v:.{decimals}f}"

        grouped = any(r.group is not None for r in self.rows)
        sized = any(r.n is not None for r in self.rows)
        head = (["group"] if grouped else []) + ["metric", "original", "safe", "difference (safe - original)"]
        head += ["n"] if sized else []
        lines = [f"## {self.title}", ""]
        for key, value in self.meta.items():
            if isinstance(value, dict):
                value = "; ".join(f"{k}: {v}" for k, v in value.items())
            lines.append(f"- {key}: {value}")
        lines += ["", "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        for r in self.rows:
            cells = ([r.group or ""] if grouped else []) + [
                r.metric,
                fmt(r.original),
                fmt(r.safe),
                fmt(r.difference, True),
            ]
            cells += [str(r.n) if r.n is not None else ""] if sized else []
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        return "\n".join(lines) + "\n"

    def write(self, out_dir: str | os.PathLike, stem: str) -> tuple[Path, Path]:
        """Write ``{stem}.md`` and ``{stem}.json`` into ``out_dir`` atomically; return both paths."""
        out_dir = Path(out_dir)
        md = atomic_write_text(out_dir / f"{stem}.md", self.to_markdown())
        js = atomic_write_json(out_dir / f"{stem}.json", self.to_dict(), indent=2)
        return md, js


def read_table(path: str | os.PathLike) -> ComparisonTable:
    """Load a table written by :meth:`ComparisonTable.write` from its JSON file."""
    return ComparisonTable.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
