"""Generation utility: prompts, CLIP score, resumable store, original vs safe from identical latents, CLI."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from saferclip_diffusers import SaferStableDiffusionPipeline
from saferclip_diffusers.data import COCO_30K_CSV
from saferclip_diffusers.evaluation.clip_loading import load_clip
from saferclip_diffusers.evaluation.clip_models import ClipEncoder, ImageTower, TextTower
from saferclip_diffusers.evaluation.tables import read_table
from saferclip_diffusers.evaluation.utility import (
    ScoreStore,
    check_run_config,
    clip_scores,
    generate_and_score,
    load_coco_prompts,
    record_run_config,
    utility_table,
)
from saferclip_diffusers.io import CorruptFileError
from saferclip_diffusers.presets import load_preset_pipeline
from saferclip_diffusers.tiny import tiny_model_dir


@pytest.fixture(scope="module")
def judge():
    return load_clip(tiny_model_dir("clip"), device="cpu")


def test_bundled_prompts_and_seeds():
    prompts = load_coco_prompts(limit=3)
    with COCO_30K_CSV.open(newline="") as f:
        rows = [r for _, r in zip(range(3), csv.DictReader(f), strict=False)]
    assert [p.index for p in prompts] == [0, 1, 2]
    assert [(p.prompt, p.seed, p.image_id) for p in prompts] == [
        (r["prompt"].strip(), int(r["evaluation_seed"]), r["image_id"]) for r in rows
    ]
    assert len(load_coco_prompts()) == 30000


def test_prompt_file_errors(tmp_path):
    (tmp_path / "a.csv").write_text("prompt,seed\na cat,1\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['evaluation_seed'\]"):
        load_coco_prompts(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("prompt,evaluation_seed\na cat,1\na dog,x\n")
    with pytest.raises(ValueError, match="row 2: evaluation_seed 'x'"):
        load_coco_prompts(tmp_path / "b.csv")


def _mean_rgb(image):
    return torch.tensor(np.asarray(image, dtype=np.float32).mean(axis=(0, 1)) / 255.0)


def test_clip_score_is_clamped_scaled_cosine(judge):
    words = {"red": (1.0, 0.0, 0.0), "unred": (-1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0)}

    def tokenize(texts):
        return {"x": torch.tensor([words[t] for t in texts])}

    colour = ClipEncoder(
        "colour",
        TextTower("w", tokenize, lambda x: x["x"], [], 3),
        ImageTower("rgb", _mean_rgb, lambda px: px, [], 3),
    )
    red = Image.new("RGB", (4, 4), (255, 0, 0))
    mixed = Image.new("RGB", (4, 4), (255, 255, 0))
    scores = clip_scores(colour, [red, red, mixed], ["red", "unred", "green"])
    assert scores.tolist() == pytest.approx([100.0, 0.0, 100 / 2**0.5])  # cos 1 -> 100, cos -1 -> 0 (clamped)
    photos = [Image.new("RGB", (40, 40), (90, 140, 200)), Image.new("RGB", (40, 40), (200, 90, 40))]
    texts = ["a blue sky", "an orange wall"]
    expected = 100 * (judge.encode_image(photos) * judge.encode_text(texts)).sum(-1).clamp(min=0)
    torch.testing.assert_close(clip_scores(judge, photos, texts), expected)
    with pytest.raises(ValueError, match="2 images for 1 prompts"):
        clip_scores(judge, photos, texts[:1])


def test_score_store_resumes_after_a_torn_line(tmp_path):
    store = ScoreStore(tmp_path / "s.jsonl")
    store.append([{"index": 0, "original": 1.0, "safe": 2.0}, {"index": 1, "original": 3.0, "safe": 3.0}])
    with (tmp_path / "s.jsonl").open("a") as f:
        f.write('{"index": 2, "orig')  # killed mid-write
    store = ScoreStore(tmp_path / "s.jsonl")
    assert sorted(store.rows) == [0, 1]
    store.append([{"index": 2, "original": 0.5, "safe": 0.5}])
    assert sorted(ScoreStore(tmp_path / "s.jsonl").rows) == [0, 1, 2]
    (tmp_path / "bad.jsonl").write_text('{"index": 0}\nnot json\n{"index": 1}\n')
    with pytest.raises(CorruptFileError, match="line 2: not valid JSON"):
        ScoreStore(tmp_path / "bad.jsonl")


def test_run_config_guards_the_output_folder(tmp_path):
    check_run_config(
        tmp_path, {"base": "a", "steps": 4}
    )  # only checks: nothing is written before models load
    assert not (tmp_path / "run.json").exists()
    record_run_config(tmp_path, {"base": "a", "steps": 4})
    record_run_config(tmp_path, {"base": "a", "steps": 4})
    with pytest.raises(ValueError, match="other settings"):
        check_run_config(tmp_path, {"base": "a", "steps": 8})


def test_identical_encoders_give_zero_difference(judge, tmp_path):
    sd = tiny_model_dir("sd")
    pipe = SaferStableDiffusionPipeline.from_pretrained(sd, safe_text_encoder=sd, keep_original=True)
    store = generate_and_score(
        pipe, judge, load_coco_prompts(limit=2), tmp_path, batch_size=2, num_inference_steps=2
    )
    table = utility_table(list(store.rows.values()))
    assert table.row("CLIP score").n == 2 and table.row("CLIP score").difference == 0.0
    assert table.row("100 x cosine (unclamped)").difference == 0.0
    assert all(r["redirection_score"] == pytest.approx(1.0) for r in store.rows.values())


class CountingPipe:
    def __init__(self, pipe):
        self.pipe, self.prompts = pipe, []

    def __call__(self, prompts, **kwargs):
        self.prompts += prompts
        return self.pipe(prompts, **kwargs)


def test_scores_match_saved_images_same_latents_and_resume(judge, tmp_path):
    pipe = load_preset_pipeline("tiny", device="cpu")
    counting = CountingPipe(pipe)
    prompts = load_coco_prompts(limit=3)
    kwargs = dict(num_inference_steps=2, height=32, width=32)
    generate_and_score(counting, judge, prompts[:1], tmp_path, batch_size=2, save_images=True, **kwargs)
    store = generate_and_score(counting, judge, prompts, tmp_path, batch_size=2, save_images=True, **kwargs)
    assert counting.prompts == [
        p.prompt for p in prompts
    ]  # the resumed run generated only the two new prompts
    for p in prompts:
        row = store.rows[p.index]
        images = {
            k: Image.open(tmp_path / "images" / k / f"{p.index:05d}_{p.image_id}.png")
            for k in ("original", "safe")
        }
        assert row["safe"] == pytest.approx(clip_scores(judge, [images["safe"]], [p.prompt]).item(), abs=1e-4)
        assert row["original"] == pytest.approx(
            clip_scores(judge, [images["original"]], [p.prompt]).item(), abs=1e-4
        )
        assert row["seed"] == p.seed
        assert row["safe"] == pytest.approx(100 * max(row["safe_cosine"], 0.0))
    # the original image is what the plain pipeline (original encoder) draws from the same seed
    from diffusers import StableDiffusionPipeline

    plain = StableDiffusionPipeline.from_pipe(pipe, text_encoder=pipe.original_text_encoder)
    first = prompts[0]
    reference = plain(
        first.prompt, generator=torch.Generator("cpu").manual_seed(first.seed), **kwargs
    ).images[0]
    saved = Image.open(tmp_path / "images" / "original" / f"00000_{first.image_id}.png")
    assert np.abs(np.asarray(reference, dtype=int) - np.asarray(saved, dtype=int)).max() <= 1


def test_cli_tiny_preset(tmp_path, capsys):
    from saferclip_diffusers.cli.utility import main

    args = ["--preset", "tiny", "--limit", "2", "--steps", "2", "--out", str(tmp_path)]
    assert main(args) == 0
    table = read_table(tmp_path / "utility.json")
    assert table.row("CLIP score").n == 2 and "random-weight" in table.meta["note"]
    assert len((tmp_path / "scores.jsonl").read_text().splitlines()) == 2
    assert json.loads((tmp_path / "run.json").read_text())["steps"] == 2
    assert main(["--preset", "tiny", "--limit", "2", "--steps", "3", "--out", str(tmp_path)]) == 2
    assert "other settings" in capsys.readouterr().err


def test_a_second_run_on_the_same_folder_is_refused(judge, tmp_path):
    from saferclip_diffusers.io import LockedError, file_lock

    with file_lock(tmp_path / "scores.lock"), pytest.raises(LockedError, match="in use by another process"):
        generate_and_score(None, judge, load_coco_prompts(limit=1), tmp_path)
    assert not (tmp_path / "scores.jsonl").exists()
