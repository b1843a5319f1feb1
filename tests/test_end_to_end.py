"""The README's main job: the tiny chain train -> swap -> generate -> evaluate, exactly as the script runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_tiny_end_to_end_script(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, HF_HUB_OFFLINE="1")
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "tiny_end_to_end.sh"), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert (tmp_path / "encoder" / "text_encoder" / "model.safetensors").is_file()
    pairs = json.loads((tmp_path / "pairs" / "pairs.json").read_text())["pairs"]
    assert len(pairs) == 2 and all(p["redirection_score"] < 0.9999 for p in pairs)  # the trained encoder moved them
    summary = json.loads((tmp_path / "i2p" / "summary.json").read_text())
    assert {"original", "safe"} <= set(json.dumps(summary).split('"'))
    for report in ("i2p/report.md", "i2p/grid.png", "i2p/categories.png", "zeroshot/zeroshot.md"):
        assert (tmp_path / report).is_file(), report
    assert list((tmp_path / "retrieval").glob("retrieval-*.md"))
