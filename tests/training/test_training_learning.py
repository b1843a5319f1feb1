"""A learning test on the tiny random-weight CLIP: SafeR-CLIP redirects unsafe captions to their targets while
safe captions barely move, and it drifts far less than Safe-CLIP on the same data.

The data mimic ViSU's weakness that SafeR-CLIP fixes: each unsafe caption is a safe COCO caption with an
unsafe phrase appended (NSFW-Caps style), but its *fixed* partner is another, unrelated safe caption (ViSU's
pairs are often semantically misaligned). Safe-CLIP must pull unsafe captions onto those partners (with in-batch
negatives); SafeR-CLIP redirects each one to its nearest safe caption in the frozen space instead. Checked
in development on seeds 0, 1, 2: SafeR-CLIP fits 33-50% of its training targets (from 0%) with safe drift
0.016-0.027 and ~97-100% self-retrieval of held-out safe captions; Safe-CLIP drifts 0.24 and keeps ~20%.
Random weights: these numbers say nothing about real CLIP models.
"""

import random

import pandas as pd
import pytest

from saferclip_diffusers.data import COCO_30K_CSV
from saferclip_diffusers.training.trainer import train

PHRASES = [
    "covered in blood",
    "next to a gun",
    "with a naked body",
    "next to a corpse",
    "full of drugs",
    "with a bloody knife",
]


@pytest.fixture(scope="module")
def misaligned_pairs(tmp_path_factory):
    captions = pd.read_csv(COCO_30K_CSV).prompt.drop_duplicates().tolist()[:160]
    partners = list(captions)
    random.Random(0).shuffle(partners)
    rows = [
        {"safe": partners[i], "unsafe": c.rstrip(". ") + " " + PHRASES[i % len(PHRASES)]}
        for i, c in enumerate(captions)
    ]
    path = tmp_path_factory.mktemp("learning") / "pairs.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _run(small_config, data, out, method):
    cfg = small_config(
        f"method={method}",
        "data.format=pairs",
        f"data.path={data}",
        "data.max_unsafe=null",
        "data.max_safe=null",
        "data.val_size=32",
        "optim.batch_size=16",
        "optim.epochs=8",
        "optim.lr=6e-3",
        "seed=0",
    )
    rows = train(cfg, out, export=False).validation
    assert [r["epoch"] for r in rows] == list(range(9))
    return rows[0], rows[-1]


def test_saferclip_redirects_with_little_drift_and_less_than_safeclip(
    small_config, misaligned_pairs, tmp_path
):
    start, end = _run(small_config, misaligned_pairs, tmp_path / "safer", "saferclip")
    k = "text_encoder/"
    assert start[k + "redirect_train@1"] == 0.0 and start[k + "drift_safe"] < 1e-6  # T0(t*) retrieves itself
    assert end[k + "redirect_train@1"] >= 0.25  # rises well above its start
    assert end[k + "drift_safe"] < 0.05 and end[k + "safe_self@1"] >= 0.9  # safe captions stay put

    _, base = _run(small_config, misaligned_pairs, tmp_path / "safeclip", "safeclip")
    assert base[k + "drift_safe"] > 3 * end[k + "drift_safe"]
    assert base[k + "safe_self@1"] < end[k + "safe_self@1"] - 0.3
