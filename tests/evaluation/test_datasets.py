"""The shared readers of saferclip_diffusers.datasets (COCO captions, ViSU / NSFW-Caps records)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from saferclip_diffusers.datasets import (
    coco_image_name,
    coco_image_path,
    image_path,
    read_coco_captions,
    read_records,
    record_location,
    resolve_nsfwcaps_columns,
)


def test_coco_captions_bundled_file_and_errors(tmp_path):
    captions = read_coco_captions(limit=3)
    assert [c.index for c in captions] == [0, 1, 2]
    assert (captions[0].image_id, captions[0].prompt, captions[0].seed) == (
        "000000203564",
        "A bicycle replica with a clock as the front wheel.",
        41337,
    )  # the file's first row
    assert (captions[1].prompt, captions[1].seed) == (
        "A black Honda motorcycle parked in front of a garage.",
        63155,
    )
    assert all(isinstance(c.seed, int) and c.prompt == c.prompt.strip() and c.prompt for c in captions)
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt,evaluation_seed\na cat,seven\n")
    with pytest.raises(ValueError, match="row 1: evaluation_seed 'seven' is not an integer"):
        read_coco_captions(bad)
    with pytest.raises(ValueError, match="limit must be at least 1"):
        read_coco_captions(limit=0)


def test_records_of_every_format_in_file_order(tmp_path):
    visu = {
        str(i): {"safe": f"s{i}"} for i in (0, 2, 10, 1)
    }  # ViSU's {"0": {...}} keys, numeric order wanted
    (tmp_path / "v.json").write_text(json.dumps(visu))
    assert [r["safe"] for r in read_records(tmp_path / "v.json")] == ["s0", "s1", "s2", "s10"]
    (tmp_path / "p.tsv").write_text("safe\tunsafe\na\tb\n")
    assert read_records(tmp_path / "p.tsv") == [{"safe": "a", "unsafe": "b"}]
    (tmp_path / "p.jsonl").write_text('{"a": 1}\n\n{"a": 2\n')
    with pytest.raises(ValueError, match=r"p.jsonl, line 3: invalid JSON"):
        read_records(tmp_path / "p.jsonl")
    assert record_location(tmp_path / "p.csv", 0) == f"{tmp_path / 'p.csv'}, row 1 (line 2)"


def test_image_names_and_places(tmp_path):
    assert coco_image_name("123") == coco_image_name(123) == coco_image_name("123.0") == "000000000123.jpg"
    (tmp_path / "val2017").mkdir()
    (tmp_path / "val2017" / "000000000123.jpg").write_bytes(b"x")
    assert coco_image_path(tmp_path, "123.0") == tmp_path / "val2017" / "000000000123.jpg"
    assert coco_image_path(tmp_path, 5) is None
    root = tmp_path / "imgs"
    assert image_path("https://host/a/b/0001.jpg?x=1", root, tmp_path) == root / "0001.jpg"
    assert (
        image_path("/cluster/user/x.png", root, tmp_path) == root / "x.png"
    )  # another machine's absolute path
    assert image_path("sub/x.png", None, tmp_path) == tmp_path / "sub" / "x.png"
    assert image_path(str(tmp_path / "val2017" / "000000000123.jpg"), root, tmp_path) == Path(
        tmp_path / "val2017" / "000000000123.jpg"
    )


def test_nsfwcaps_columns_aliases_and_overrides():
    rows = [{"caption": "a", "nsfw_caption": "b", "image_coco_url": "u", "chosen_category": "c"}]
    cols = resolve_nsfwcaps_columns(rows, "f.csv")
    assert (cols["safe_caption"], cols["unsafe_caption"], cols["safe_image"], cols["category"]) == (
        "caption",
        "nsfw_caption",
        "image_coco_url",
        "chosen_category",
    )
    assert cols["unsafe_image"] is None
    with pytest.raises(ValueError, match="column 'mine' .given for safe_caption. not found"):
        resolve_nsfwcaps_columns(rows, "f.csv", {"safe_caption": "mine"})
    with pytest.raises(ValueError, match="no column for unsafe_caption"):
        resolve_nsfwcaps_columns([{"caption": "a"}], "f.csv")
