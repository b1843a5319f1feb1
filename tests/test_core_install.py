"""The core install (issue 11 §1): with every tool package made unimportable, the package imports, builds the tiny
Safer pipeline through ``load_preset_pipeline("tiny")`` and generates; the demo names its extra. This catches a
module-level import of a tool dependency in a core module on every run (.ci/run also checks a real core venv)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "scripts" / "core_smoke.py"


def run_smoke(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, str(SMOKE), *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600
    )


def test_core_works_with_every_tool_package_hidden():
    result = run_smoke("--hide-tool-deps")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        "core install ok: saferclip_diffusers" in result.stdout
        and "no tool package imported" in result.stdout
    )


def test_the_hiding_really_hides(tmp_path):
    # the same hider in front of a plain import: a hidden package is not found, a core one still is
    code = (
        "import importlib.util, runpy, sys\n"
        f"smoke = runpy.run_path({str(SMOKE)!r})\n"
        "smoke['hide_tool_modules']()\n"
        "assert importlib.util.find_spec('pandas') is None and importlib.util.find_spec('torch') is not None\n"
        "try:\n"
        "    import gradio\n"
        "except ModuleNotFoundError:\n"
        "    print('hidden')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "hidden", result.stderr[-2000:]
