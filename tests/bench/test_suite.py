"""The suite runner and bench/run.py's argument handling (no benchmark is actually run here)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from bench import suite
from bench.environment import environment
from bench.report import Section, Target


def test_parse_only():
    assert suite.parse_only(None) == list(suite.FAMILIES)
    assert suite.parse_only("memory, generation") == ["memory", "generation"]
    with pytest.raises(ValueError, match="unknown benchmark family bogus"):
        suite.parse_only("memory,bogus")


def test_a_failing_family_does_not_lose_the_others(tmp_path, monkeypatch):
    def fine(device, quick):
        return Section("memory", "Memory", environment(device), targets=[Target("t", "<= 1", "0.9", True)])

    def broken(device, quick):
        raise RuntimeError("boom")

    monkeypatch.setattr(suite, "_runner", lambda family: broken if family == "generation" else fine)
    status = suite.run_suite(["generation", "memory"], device="cpu", quick=True, out_dir=tmp_path)
    assert status["memory"] == "ok" and status["generation"].startswith("failed: RuntimeError: boom")
    assert list(json.loads((tmp_path / "quick.json").read_text())["sections"]) == ["memory"]
    assert not (tmp_path / "latest.json").exists()  # quick runs never overwrite the committed figures


def _cli():
    path = Path(__file__).resolve().parents[2] / "bench" / "run.py"
    spec = importlib.util.spec_from_file_location("bench_run", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_rejects_bad_arguments(capsys):
    cli = _cli()
    with pytest.raises(SystemExit) as exc:
        cli.main(["--only", "speed"])
    assert exc.value.code == 2 and "unknown benchmark family speed" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["--models", "sd3"])
    assert "--models takes sd15 and/or sdxl" in capsys.readouterr().err


def test_cli_passes_options_and_reports_status(tmp_path, monkeypatch):
    cli = _cli()
    seen = {}

    def fake_run_suite(families, *, device, quick, out_dir, options):
        seen.update(families=families, device=device, quick=quick, out_dir=out_dir, options=options)
        return {f: "ok" for f in families}

    monkeypatch.setattr(cli, "run_suite", fake_run_suite)
    code = cli.main(
        [
            "--only",
            "generation",
            "--device",
            "cpu",
            "--quick",
            "--out",
            str(tmp_path),
            "--models",
            "sd15",
            "--steps",
            "3",
            "--size",
            "64",
        ]
    )
    assert code == 0
    assert seen["families"] == ["generation"] and seen["quick"] and seen["device"] == "cpu"
    assert seen["options"]["generation"] == {
        "models": ("sd15",),
        "overrides": {"steps": 3, "height": 64, "width": 64},
    }
