from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from saferclip_diffusers.cli.generate import build_parser, main
from saferclip_diffusers.pairs import side_by_side


def test_side_by_side_keeps_both_images():
    left, right = Image.new("RGB", (32, 32), "red"), Image.new("RGB", (32, 32), "blue")
    pair = np.asarray(side_by_side(left, right))
    assert pair.shape[1] == 64 and pair.shape[0] > 32
    assert tuple(pair[-1, 0]) == (255, 0, 0) and tuple(pair[-1, -1]) == (0, 0, 255)


def test_tiny_pair_command_writes_images_scores_and_resumes(tmp_path, capsys):
    argv = [
        "--preset",
        "tiny",
        "--prompt",
        "a cat",
        "--prompt",
        "a dog",
        "--out",
        str(tmp_path),
        "--steps",
        "1",
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    written = json.loads((tmp_path / "pairs.json").read_text())
    assert [r["prompt"] for r in written["pairs"]] == ["a cat", "a dog"]
    assert written["settings"]["random_weights"] is True and "random-weight" in capsys.readouterr().out
    original = np.asarray(Image.open(tmp_path / "000-original.png"))
    safe = np.asarray(Image.open(tmp_path / "000-safe.png"))
    assert original.shape == safe.shape == (32, 32, 3) and (original != safe).any()
    stamp = (tmp_path / "000-safe.png").stat().st_mtime_ns
    assert main(argv + ["--prompt", "a bird"]) == 0  # resumes: only the new prompt is generated
    assert (tmp_path / "000-safe.png").stat().st_mtime_ns == stamp
    assert len(json.loads((tmp_path / "pairs.json").read_text())["pairs"]) == 3
    assert main(argv[:-4] + ["--steps", "2", "--device", "cpu"]) == 2  # other settings, same folder: refused
    assert "other settings" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flag,value", [("--steps", "0"), ("--safety-scale", "1.5"), ("--guidance-scale", "nan")]
)
def test_bad_numbers_name_the_flag(flag, value, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([flag, value])
    assert flag in capsys.readouterr().err
