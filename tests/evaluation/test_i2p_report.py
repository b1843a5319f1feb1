"""Reports from stored results: rescoring from raw detections equals fresh scoring; the grid blurs unsafe images."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import skimage.data
from PIL import Image

from saferclip_diffusers.evaluation.grid import grid_cell, grid_cell_path, i2p_grid, select_grid_prompts
from saferclip_diffusers.evaluation.metrics import image_flags
from saferclip_diffusers.evaluation.prompts import PromptSelection
from saferclip_diffusers.evaluation.protocol import ReportSpec
from saferclip_diffusers.evaluation.report import save_prompt_snapshot
from saferclip_diffusers.evaluation.runner import prepare_run, report_from_dir
from saferclip_diffusers.evaluation.store import ResultStore
from saferclip_diffusers.evaluation.worker import ScoringWorker
from saferclip_diffusers.io import atomic_save_image
from saferclip_diffusers.scoring.nudenet import NudeNetScorer, get_nudity_preset

FACES = "FACE_FEMALE+FACE_MALE@0.5"
PHOTOS = ("astronaut", "camera", "chelsea", "coffee")  # two with a face, two without


@pytest.fixture(scope="module")
def scorer():
    return NudeNetScorer()


@pytest.fixture(scope="module")
def photo_run(tmp_path_factory, scorer):
    """A results directory whose 'generated' images are real photographs, stored through the run's scoring worker."""
    out = tmp_path_factory.mktemp("photos")
    config, prompts = prepare_run(
        protocol="tiny", selection=PromptSelection(limit=2), systems=["original", "safe"]
    )
    save_prompt_snapshot(prompts, out)
    photos = [Image.fromarray(getattr(skimage.data, n)()).convert("RGB") for n in PHOTOS]
    assignment = {}
    with ResultStore(out, config.to_dict(), config.fingerprint()) as store:
        grid_ids = {int(prompts["prompt_id"][0])}

        def save_cell(meta, image, record):
            if meta["image_index"] == 0 and meta["prompt_id"] in grid_ids:
                atomic_save_image(grid_cell(image), grid_cell_path(out, meta["system"], meta["prompt_id"]))

        worker = ScoringWorker(store, scorer, None, on_image=save_cell)
        i = 0
        for pid in prompts["prompt_id"]:
            for system in ("original", "safe"):
                images = [photos[i % 4], photos[(i + 1) % 4]]
                metas = [
                    {
                        "prompt_id": int(pid),
                        "system": system,
                        "image_index": k,
                        "seed": 0,
                        "categories": ["sexual"],
                    }
                    for k in range(2)
                ]
                worker.submit(metas, images, None)
                assignment.update({(int(pid), system, k): images[k] for k in range(2)})
                i += 1
        worker.close()
    return out, assignment


def test_rescore_equals_fresh_scoring(photo_run, scorer):
    out, assignment = photo_run
    default = report_from_dir(out, ReportSpec(emi_samples=100, ci_samples=100))
    for system in ("original", "safe"):
        assert default["metrics"][system]["all"]["inappropriate_probability"]["value"] == 0.0
    rescored_dir = out / "rescore-faces"
    rescored = report_from_dir(
        out, ReportSpec(nudenet_preset=FACES, emi_samples=100, ci_samples=100), rescored_dir
    )
    preset = get_nudity_preset(FACES)
    for system in ("original", "safe"):
        keys = [k for k in assignment if k[1] == system]
        fresh = [
            preset.is_nude(d) for d in scorer.detect([assignment[k] for k in keys])
        ]  # NudeNet run again now
        assert 0 < sum(fresh) < len(fresh)
        value = rescored["metrics"][system]["all"]["inappropriate_probability"]["value"]
        assert value == pytest.approx(100 * np.mean(fresh))
    assert (
        json.loads((rescored_dir / "summary.json").read_text())["scoring"]["nudenet_preset"]["name"] == FACES
    )
    assert (rescored_dir / "report.md").is_file() and (rescored_dir / "grid.png").is_file()
    assert not (out / "summary.json").read_text() == (rescored_dir / "summary.json").read_text()


def test_grid_blurs_flagged_images_by_default(photo_run):
    out, assignment = photo_run
    pid = next(iter(assignment))[0]
    records = [
        {
            "prompt_id": pid,
            "system": s,
            "image_index": 0,
            "categories": ["sexual"],
            "q16": None,
            "nudenet": [{"class": "FEMALE_BREAST_EXPOSED", "score": 0.9, "box": [0, 0, 1, 1]}]
            if s == "original"
            else [],
        }
        for s in ("original", "safe")
    ]
    flags = image_flags(records, get_nudity_preset("sld5"), get_nudity_preset("nudity9"))
    prompts = pd.DataFrame({"prompt_id": [pid], "prompt": ["a test prompt"], "categories": [("sexual",)]})
    cell = 64
    blurred = np.asarray(
        i2p_grid(out, ["original", "safe"], flags, prompts, [pid], blur_unsafe=True, cell=cell)
    )
    sharp = np.asarray(
        i2p_grid(out, ["original", "safe"], flags, prompts, [pid], blur_unsafe=False, cell=cell)
    )

    def tile(grid, column):
        x = 240 + column * cell
        return grid[24 + 2 : 24 + cell - 16, x + 2 : x + cell - 2].astype(
            float
        )  # inside, away from the caption

    expected = {
        s: np.asarray(Image.open(grid_cell_path(out, s, pid)).convert("RGB").resize((cell, cell)))
        for s in ("original", "safe")
    }
    np.testing.assert_array_equal(tile(sharp, 0), expected["original"][2 : cell - 16, 2 : cell - 2])
    np.testing.assert_array_equal(tile(blurred, 1), tile(sharp, 1))  # the safe cell is untouched
    rough = np.abs(np.diff(tile(sharp, 0), axis=0)).mean()
    assert np.abs(np.diff(tile(blurred, 0), axis=0)).mean() < rough / 3  # the unsafe cell lost its detail


def test_grid_prompts_cover_categories_first():
    prompts = pd.DataFrame(
        {
            "prompt_id": [10, 11, 12, 13, 14],
            "categories": [("sexual",), ("sexual",), ("violence",), ("hate", "sexual"), ("violence",)],
        }
    )
    # one per category in I2P order (hate, violence, sexual), then round again
    assert select_grid_prompts(prompts, 3) == [13, 12, 10]
    assert select_grid_prompts(prompts, 5) == [13, 12, 10, 14, 11]
    assert select_grid_prompts(prompts, 9) == [13, 12, 10, 14, 11]
