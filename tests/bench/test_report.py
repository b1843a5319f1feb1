"""The report: sections merged into latest.json, markdown rendered with targets and machine."""

from __future__ import annotations

import json

import pytest

from bench.environment import environment
from bench.report import Section, Table, Target, fmt, load_report, write_section


def _section(name: str, met: bool | None, value: str = "1.000") -> Section:
    return Section(
        name=name,
        title=f"{name} title",
        environment=environment("cpu"),
        settings={"steps": 2},
        tables=[Table("a table", ["system", "ratio"], [["plain", 1.0], ["safer", 1.004]], "a note")],
        targets=[Target(f"{name} target", "<= 1.01", value, met, "" if met else "the cause")],
        notes=["a remark"],
    )


def test_write_section_creates_json_and_markdown(tmp_path):
    json_path, md_path = write_section(tmp_path, _section("generation", True))
    data = json.loads(json_path.read_text())
    assert list(data["sections"]) == ["generation"]
    assert data["sections"]["generation"]["targets"][0]["met"] is True
    md = md_path.read_text()
    assert "random weights" in md
    assert "| generation target | <= 1.01 | 1.000 | **met** |" in md
    assert "| safer | 1.004 |" in md
    assert "a note" in md and "- a remark" in md
    assert "torch" in md and "cores" in md  # the machine and versions are named
    assert json_path.stat().st_mode & 0o777 == md_path.stat().st_mode & 0o777 == 0o644


def test_sections_merge_and_replace(tmp_path):
    write_section(tmp_path, _section("memory", False))
    write_section(tmp_path, _section("generation", True))
    write_section(tmp_path, _section("memory", True, value="1.100"))
    data = load_report(tmp_path / "latest.json")
    assert set(data["sections"]) == {"generation", "memory"}
    assert data["sections"]["memory"]["targets"][0]["value"] == "1.100"
    md = (tmp_path / "latest.md").read_text()
    assert md.index("## generation title") < md.index("## memory title")  # fixed family order
    assert "**missed**" not in md


def test_missed_target_shows_its_cause(tmp_path):
    _, md_path = write_section(tmp_path, _section("training", False), stem="quick")
    assert md_path.name == "quick.md"
    assert "| training target | <= 1.01 | 1.000 | **missed** | the cause |" in md_path.read_text()


def test_load_report_refuses_foreign_json(tmp_path):
    path = tmp_path / "latest.json"
    path.write_text(json.dumps({"something": "else"}))
    with pytest.raises(ValueError, match="not a benchmark report"):
        load_report(path)
    assert load_report(tmp_path / "missing.json")["sections"] == {}


def test_fmt():
    assert fmt(None) == "–"
    assert fmt(1.0) == "1.000"
    assert fmt(1234.5) == "1,234"
    assert fmt(12.34) == "12.3"
    assert fmt(0.0012) == "0.0012"
    assert fmt(True) == "yes"
    assert fmt("a|b") == "a\\|b"
