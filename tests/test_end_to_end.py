"""The README's main job: the tiny chain train -> swap -> generate -> evaluate, exactly as the script runs it,
inside the no-egress harness (tests/no_egress.py): offline it must not attempt a single outbound connection."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from tests.no_egress import run_isolated

ROOT = Path(__file__).resolve().parents[1]


def test_tiny_end_to_end_script(tmp_path):
    # no telemetry opt-out from outside (nor CI, which onnxruntime honours): the package's own must hold
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORT_") and k != "CI"}
    env.update(PYTHON=sys.executable, HF_HUB_OFFLINE="1")
    proc = run_isolated(
        ["bash", str(ROOT / "scripts" / "tiny_end_to_end.sh"), str(tmp_path)], env=env, timeout=3600
    )  # a few CPU-minutes; over 30 min wall on a heavily loaded 2-core machine
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.outbound == [], proc.outbound
    assert not [f for f in proc.home_files if "onnxruntime" in f.lower()], proc.home_files
    assert (tmp_path / "encoder" / "text_encoder" / "model.safetensors").is_file()
    pairs = json.loads((tmp_path / "pairs" / "pairs.json").read_text())["pairs"]
    assert len(pairs) == 2 and all(
        p["redirection_score"] < 0.9999 for p in pairs
    )  # the trained encoder moved them
    summary = json.loads((tmp_path / "i2p" / "summary.json").read_text())
    assert {"original", "safe"} <= set(summary["systems"]) and summary["completeness"]["complete"]
    [safe] = [s for s in summary["config"]["systems"] if s["name"] == "safe"]
    # the encoder trained in step 1 is the one evaluated
    assert Path(safe["safe_text_encoder"]) == tmp_path / "encoder"
    attacks = json.loads((tmp_path / "attacks" / "summary.json").read_text())
    assert set(attacks["asr_post"]["swap-gcg"]) == {"original", "safe", "negative-prompt"}
    for report in (
        "attacks/report.md",
        "attacks/grid.png",
        "i2p/report.md",
        "i2p/grid.png",
        "i2p/categories.png",
        "zeroshot/zeroshot.md",
    ):
        assert (tmp_path / report).is_file(), report
    assert list((tmp_path / "retrieval").glob("retrieval-*.md"))
