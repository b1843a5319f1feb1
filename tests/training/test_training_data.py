"""Data readers (ViSU, NSFW-Caps, pairs, unpaired), their error messages, and the validation split."""

import json

import numpy as np
import pytest
from PIL import Image

from saferclip_diffusers.training.config import DataSettings
from saferclip_diffusers.training.data import load_training_data
from saferclip_diffusers.training.split import split_validation


def _png(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (120, 30, 30)).save(path)
    return path


def test_pairs_csv_with_images_and_dedupe(tmp_path):
    for name in ("s1.png", "s2.png", "u1.png", "u2.png", "u3.png"):
        _png(tmp_path / "img" / name)
    csv = tmp_path / "pairs.csv"
    csv.write_text(
        "safe,unsafe,safe_image,unsafe_image,category\n"
        "a cat on a mat,a cat on a mat with a gun,s1.png,u1.png,violence\n"
        "A cat on a  mat,a bloody cat on a mat,s1.png,u2.png,shocking\n"
        "a dog in a park,a dog in a park with a gun,s2.png,u3.png,violence\n"
        "a dog in a park,A DOG IN A PARK WITH A GUN,s2.png,u3.png,violence\n"
    )
    data = load_training_data(DataSettings(format="pairs", path=str(csv), image_root=str(tmp_path / "img")))
    assert data.safe_texts == ["a cat on a mat", "a dog in a park"]  # duplicate safe captions merged
    assert len(data.unsafe_texts) == 3  # duplicate unsafe caption dropped
    assert data.pair.tolist() == [0, 0, 1]
    assert data.unsafe_images[1].endswith("u2.png") and data.safe_images[1].endswith("s2.png")
    assert data.categories == ["violence", "shocking", "violence"]


def test_missing_field_names_file_and_row(tmp_path):
    csv = tmp_path / "bad.csv"
    csv.write_text("safe,unsafe\na,b\nc,\n")
    with pytest.raises(ValueError, match=r"bad\.csv, row 2 \(line 3\): missing field 'unsafe'"):
        load_training_data(DataSettings(format="pairs", path=str(csv)))
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text('{"safe": "a", "unsafe": "b"}\n{"unsafe": "c"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl, line 2: missing field 'safe'"):
        load_training_data(DataSettings(format="pairs", path=str(jsonl)))


def test_missing_image_names_file_row_and_path(tmp_path):
    _png(tmp_path / "ok.png")
    csv = tmp_path / "p.csv"
    csv.write_text("safe,unsafe,safe_image\na,b,ok.png\nc,d,gone.png\n")
    with pytest.raises(FileNotFoundError, match=r"p\.csv, row 2 \(line 3\): image not found: .*gone\.png"):
        load_training_data(DataSettings(format="pairs", path=str(csv)))


def test_visu_layout(tmp_path):
    _png(tmp_path / "coco" / "val2017" / "000000000042.jpg")
    _png(tmp_path / "visu_imgs" / "u0.png")
    records = {
        "0": {
            "coco_id": 42,
            "safe": "a table with fruit",
            "nsfw": "a table with a gun",
            "nsfw_im_path": "u0.png",
            "tag": "weapons",
        }
    }
    path = tmp_path / "visu_train.json"
    path.write_text(json.dumps({"info": {}, "data": records}))
    text_only = load_training_data(DataSettings(format="visu", path=str(path)))
    assert text_only.safe_images is None and text_only.unsafe_images is None
    assert text_only.unsafe_texts == ["a table with a gun"] and text_only.categories == ["weapons"]
    data = load_training_data(
        DataSettings(
            format="visu",
            path=str(path),
            image_root=str(tmp_path / "coco"),
            unsafe_image_root=str(tmp_path / "visu_imgs"),
        )
    )
    assert data.safe_images[0].endswith("val2017/000000000042.jpg") and data.unsafe_images[0].endswith(
        "u0.png"
    )
    records["0"]["coco_id"] = 7
    path.write_text(json.dumps(records))
    with pytest.raises(FileNotFoundError, match=r"visu_train\.json, record 0: COCO image 000000000007\.jpg"):
        load_training_data(DataSettings(format="visu", path=str(path), image_root=str(tmp_path / "coco")))


def test_nsfwcaps_layout(tmp_path):
    _png(tmp_path / "imgs" / "0001.jpg")
    path = tmp_path / "nsfwcaps.jsonl"
    path.write_text(
        json.dumps(
            {
                "image_coco_url": "https://x/y/0001.jpg",
                "caption": "a vase of flowers on a table",
                "nsfw_caption": "a vase of flowers next to a handgun",
                "chosen_category": "illegal",
            }
        )
        + "\n"
    )
    data = load_training_data(
        DataSettings(format="nsfwcaps", path=str(path), image_root=str(tmp_path / "imgs"))
    )
    assert data.safe_texts == ["a vase of flowers on a table"] and data.safe_images[0].endswith("0001.jpg")
    assert data.categories == ["illegal"] and data.unsafe_images is None


def test_unpaired_bundled_selection_is_deterministic():
    cfg = DataSettings(
        format="unpaired", unsafe="bundled:i2p", safe_pool="bundled:coco", max_unsafe=30, max_safe=100
    )
    a, b = load_training_data(cfg), load_training_data(cfg)
    assert a.unsafe_texts == b.unsafe_texts and a.safe_texts == b.safe_texts
    assert len(a.unsafe_texts) == 30 and len(a.safe_texts) == 100 and (a.pair == -1).all() and not a.paired
    assert len({t.lower() for t in a.unsafe_texts}) == 30
    held = load_training_data(
        DataSettings(format="unpaired", unsafe_holdout=0.5, max_unsafe=None, max_safe=10)
    )
    full = load_training_data(DataSettings(format="unpaired", max_unsafe=None, max_safe=10))
    assert 0.4 < len(held.unsafe_texts) / len(full.unsafe_texts) < 0.6
    assert set(held.unsafe_texts) < set(full.unsafe_texts)


def test_unpaired_txt_and_errors(tmp_path):
    (tmp_path / "u.txt").write_text("bad prompt one\n\nbad prompt two\n")
    (tmp_path / "pool.csv").write_text("caption\nsafe one\nsafe two\n")
    data = load_training_data(
        DataSettings(format="unpaired", unsafe=str(tmp_path / "u.txt"), safe_pool=str(tmp_path / "pool.csv"))
    )
    assert data.unsafe_texts == ["bad prompt one", "bad prompt two"] and data.safe_texts == [
        "safe one",
        "safe two",
    ]
    (tmp_path / "pool2.csv").write_text("other\nx\n")
    with pytest.raises(ValueError, match="cannot find the safe captions"):
        load_training_data(
            DataSettings(
                format="unpaired", unsafe=str(tmp_path / "u.txt"), safe_pool=str(tmp_path / "pool2.csv")
            )
        )
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        load_training_data(DataSettings(format="unpaired", unsafe=str(tmp_path / "missing.csv")))
    with pytest.raises(ValueError, match="needs data.path"):
        load_training_data(DataSettings(format="visu"))


def test_split_holds_out_partners_and_pool_captions(tmp_path):
    rows = "\n".join(f"safe {i},unsafe {i}" for i in range(20))
    (tmp_path / "p.csv").write_text("safe,unsafe\n" + rows + "\n")
    data = load_training_data(DataSettings(format="pairs", path=str(tmp_path / "p.csv")))
    split = split_validation(data, 0.25, seed=0)
    assert len(split.val_unsafe) == 5 and len(split.train_unsafe) == 15
    assert set(split.val_safe.tolist()) == set(data.pair[split.val_unsafe].tolist())
    assert not set(split.train_safe.tolist()) & set(split.val_safe.tolist())
    unpaired = load_training_data(DataSettings(format="unpaired", max_unsafe=20, max_safe=50))
    s2 = split_validation(unpaired, 4, seed=0)
    assert len(s2.val_unsafe) == 4 and len(s2.val_safe) == 4 and len(s2.train_safe) == 46
    assert np.array_equal(split_validation(unpaired, 4, seed=0).val_safe, s2.val_safe)
    with pytest.raises(ValueError, match="leaves no training items"):
        split_validation(unpaired, 20, seed=0)
