"""Run a benchmark module in a fresh Python process and read back the one result line it prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

RESULT_PREFIX = "BENCH-RESULT "


def run_module_in_child(module: str, args: list[str], timeout: float = 1800) -> dict[str, Any]:
    """Run ``python -m module args`` in a fresh process and parse the result line it prints."""
    cmd = [sys.executable, "-m", module, *args]
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])  # the checkout: bench/ is not installed with the package
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
    raise RuntimeError(f"{' '.join(args[:2])} failed (exit {proc.returncode}):\n{tail}")
