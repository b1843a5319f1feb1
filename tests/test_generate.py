from __future__ import annotations

import json

import numpy as np
from PIL import Image

from saferclip_diffusers.generate import main, side_by_side


def test_side_by_side_keeps_both_images():
    left, right = Image.new("RGB", (32, 32), "red"), Image.new("RGB", (32, 32), "blue")
    pair = np.asarray(side_by_side(left, right))
    assert pair.shape[1] == 64 and pair.shape[0] > 32
    assert tuple(pair[-1, 0]) == (255, 0, 0) and tuple(pair[-1, -1]) == (0, 0, 255)


def test_tiny_pair_command_writes_images_and_scores(tmp_path):
    summary = main(["--preset", "tiny", "--prompt", "a cat", "--prompt", "a dog", "--output", str(tmp_path),
                    "--steps", "2", "--device", "cpu"])
    written = json.loads((tmp_path / "pairs.json").read_text())
    assert written == json.loads(json.dumps(summary))
    assert [r["prompt"] for r in written["pairs"]] == ["a cat", "a dog"]
    assert all(-1 <= r["redirection_score"] <= 1 for r in written["pairs"])
    original = np.asarray(Image.open(tmp_path / "000-original.png"))
    safe = np.asarray(Image.open(tmp_path / "000-safe.png"))
    assert original.shape == safe.shape == (32, 32, 3) and (original != safe).any()
