"""Zero-shot classification: accuracy on constructed cases, class names, templates, ImageFolder loading, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from saferclip_diffusers.evaluation.clip_loading import load_clip, load_clip_pair
from saferclip_diffusers.evaluation.clip_models import ClipEncoder, ImageTower, TextTower
from saferclip_diffusers.evaluation.tables import read_table
from saferclip_diffusers.evaluation.zeroshot import (
    compare_zeroshot,
    format_template,
    load_image_folder,
    read_classnames,
    resolve_templates,
    topk_accuracy,
    write_tiny_image_folder,
    zeroshot_classifier,
)
from saferclip_diffusers.tiny import tiny_model_dir


def test_topk_accuracy_by_hand():
    classifier = torch.eye(3)
    images = torch.tensor(
        [
            [0.9, 0.3, 0.1],  # label 0: ranks 0, 1, 2 -> top-1 hit
            [0.9, 0.3, 0.1],  # label 1: second -> top-2 hit
            [0.1, 0.9, 0.3],  # label 0: third -> miss at 1 and 2
            [0.2, 0.1, 0.8],  # label 2: top-1 hit
        ]
    )
    acc = topk_accuracy(images, classifier, torch.tensor([0, 1, 0, 2]), ks=(1, 2, 5))
    assert acc == pytest.approx({1: 50.0, 2: 75.0, 5: 100.0})  # K=5 is capped at the 3 classes


# a hand-made "CLIP": a text is the vector of its colour word, an image its mean RGB


def _mean_rgb(image):
    return torch.tensor(np.asarray(image, dtype=np.float32).mean(axis=(0, 1)) / 255.0)


MEAN_RGB_TOWER = ImageTower("mean-rgb", _mean_rgb, lambda pixels: pixels, [], 3)
RGB = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0)}


def _colour_encoder(name, words):
    def tokenize(texts):
        return {
            "x": torch.tensor(
                [next(words[w] for w in t.replace(".", " ").split() if w in words) for t in texts]
            )
        }

    return ClipEncoder(name, TextTower(name, tokenize, lambda x: x["x"].float(), [], 3), MEAN_RGB_TOWER)


@pytest.fixture()
def colour_folder(tmp_path):
    colours = {
        "red": [(255, 51, 0), (230, 60, 10)],
        "green": [(51, 255, 0), (40, 230, 20)],
        "blue": [(0, 0, 255)] * 2,
    }
    for name, shades in colours.items():
        (tmp_path / name).mkdir()
        for i, rgb in enumerate(shades):
            Image.new("RGB", (8, 8), rgb).save(tmp_path / name / f"{i}.png")
    (tmp_path / "notes.txt").write_text("not a class folder")
    return tmp_path


def test_end_to_end_known_accuracy(colour_folder, tmp_path):
    data = load_image_folder(colour_folder)
    assert data.classnames == ["blue", "green", "red"] and len(data.samples) == 6
    original = _colour_encoder("colour", RGB)
    swapped = _colour_encoder("swapped", {"red": RGB["green"], "green": RGB["red"], "blue": RGB["blue"]})
    table = compare_zeroshot(original, swapped, [data], resolve_templates("photo"), ks=(1, 2))
    # original: every image is closest to its own colour -> 100%. swapped: red and green images are called the
    # other colour (top-1 wrong), each one's true class comes second (the images are slightly mixed); blue right
    assert table.row("top-1", data.name).original == pytest.approx(100.0)
    assert table.row("top-1", data.name).safe == pytest.approx(100 / 3)
    assert table.row("top-1", data.name).difference == pytest.approx(100 / 3 - 100)
    assert table.row("top-2", data.name).safe == pytest.approx(100.0)
    assert table.row("top-1", data.name).n == 6


def test_classifier_is_mean_of_normalised_prompts():
    encoder = load_clip(tiny_model_dir("clip"), device="cpu")
    templates = ["a photo of a {}.", "a drawing of a {c}."]
    classifier = zeroshot_classifier(encoder, ["cat", "rocket"], templates)
    prompts = encoder.encode_text(
        ["a photo of a cat.", "a drawing of a cat.", "a photo of a rocket.", "a drawing of a rocket."]
    )
    expected = F.normalize(torch.stack([prompts[:2].mean(0), prompts[2:].mean(0)]), dim=-1)
    torch.testing.assert_close(classifier, expected)


def test_templates():
    assert len(resolve_templates("openai-imagenet")) == 80
    assert len(resolve_templates("simple-imagenet")) == 7
    assert [format_template(t, "dog") for t in resolve_templates("photo")] == ["a photo of a dog."]
    assert format_template(resolve_templates("openai-imagenet")[0], "dog") == "a bad photo of a dog."


def test_template_file_and_errors(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("a satellite photo of {}.\n\nan aerial view of {c}\n")
    assert [format_template(t, "a farm") for t in resolve_templates(path)] == [
        "a satellite photo of a farm.",
        "an aerial view of a farm",
    ]
    path.write_text("a photo\n")
    with pytest.raises(ValueError, match="no '{}'"):
        resolve_templates(path)
    with pytest.raises(ValueError, match="not a named set"):
        resolve_templates("no-such-set")


def test_classnames_sources(tmp_path):
    folders = ["golden_retriever", "tabby_cat"]
    assert read_classnames(None, folders) == ["golden retriever", "tabby cat"]
    (tmp_path / "m.json").write_text(json.dumps({"golden_retriever": "dog", "tabby_cat": "cat"}))
    assert read_classnames(tmp_path / "m.json", folders) == ["dog", "cat"]
    (tmp_path / "l.json").write_text(json.dumps(["dog", "cat"]))
    assert read_classnames(tmp_path / "l.json", folders) == ["dog", "cat"]
    (tmp_path / "n.txt").write_text("dog\ncat\n")
    assert read_classnames(tmp_path / "n.txt", folders) == ["dog", "cat"]
    (tmp_path / "short.txt").write_text("dog\n")
    with pytest.raises(ValueError, match="1 class names for 2 class folders"):
        read_classnames(tmp_path / "short.txt", folders)
    (tmp_path / "partial.json").write_text(json.dumps({"golden_retriever": "dog"}))
    with pytest.raises(ValueError, match="tabby_cat"):
        read_classnames(tmp_path / "partial.json", folders)
    wnids = [f"n{i:08d}" for i in range(1000)]
    names = read_classnames(None, wnids)  # ImageNet folders get ImageNet's names automatically
    assert len(names) == 1000 and names[0] == "tench"
    with pytest.raises(ValueError, match="1000 class folders"):
        read_classnames("imagenet", folders)


def test_image_folder_limit_and_errors(colour_folder, tmp_path):
    data = load_image_folder(colour_folder, limit_per_class=1, name="one-each")
    assert data.name == "one-each" and data.labels.tolist() == [0, 1, 2]
    with pytest.raises(FileNotFoundError, match="not found"):
        load_image_folder(tmp_path / "nowhere")


def test_identity_and_shared_image_tower(tmp_path):
    root = write_tiny_image_folder(tmp_path / "images")
    data = load_image_folder(root)
    assert len(data.classnames) == 6 and len(data.samples) == 18
    original, same = load_clip_pair(tiny_model_dir("clip"), tiny_model_dir("clip"), device="cpu")
    table = compare_zeroshot(
        original, same, [data, load_image_folder(root, name="again")], resolve_templates("photo")
    )
    assert [r.group for r in table.rows] == ["images", "images", "again", "again", "mean of 2", "mean of 2"]
    # top-1 by hand: one template, so each class's classifier is its prompt's embedding
    prompts = original.encode_text([f"a photo of a {c}." for c in data.classnames])
    images = original.encode_image([Image.open(p).convert("RGB") for p, _ in data.samples])
    top1 = 100 * ((images @ prompts.T).argmax(dim=1) == data.labels).float().mean().item()
    assert table.row("top-1", "images").original == pytest.approx(top1)
    assert table.row("top-1", "images").safe == pytest.approx(top1)  # the same CLIP on both sides
    assert table.row("top-1", "mean of 2").original == pytest.approx(top1)
    # a safe text encoder keeps the image tower: images are embedded once, from the cache on a rerun
    original, safe = load_clip_pair(tiny_model_dir("clip"), tiny_model_dir("safe-sd"), device="cpu")
    compare_zeroshot(original, safe, [data], resolve_templates("photo"), cache_dir=tmp_path / "cache")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["images-original-images.safetensors"]


def test_cli_tiny_preset(tmp_path_factory, colour_folder):
    from saferclip_diffusers.cli.zeroshot import main

    tmp_path = tmp_path_factory.mktemp("cli")
    out = tmp_path / "out"
    assert main(["--preset", "tiny", "--out", str(out), "--templates", "simple-imagenet"]) == 0
    table = read_table(out / "zeroshot.json")
    assert [(r.group, r.metric, r.n) for r in table.rows] == [("tiny", "top-1", 18), ("tiny", "top-5", 18)]
    assert "random-weight" in table.meta["note"] and (out / "zeroshot.md").is_file()
    # the user's own folders (named or bare), one class-name file for all
    (tmp_path / "names.txt").write_text("navy\nlime\ncrimson\n")
    args = [
        "--preset",
        "tiny",
        "--out",
        str(out),
        "--data",
        f"colours={colour_folder}",
        "--data",
        str(colour_folder),
        "--classnames",
        str(tmp_path / "names.txt"),
        "--templates",
        "photo",
        "--k",
        "1",
    ]
    assert main(args) == 0
    groups = [r.group for r in read_table(out / "zeroshot.json").rows]
    assert groups == ["colours", colour_folder.name, "mean of 2"]
