"""Retrieval recall (constructed cases with hand-computed answers), data loaders, tables and the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from saferclip_diffusers.evaluation.clip_loading import load_clip_pair
from saferclip_diffusers.evaluation.clip_models import ClipEncoder, ImageTower, TextTower
from saferclip_diffusers.evaluation.retrieval import (
    RetrievalEmbeddings,
    compare_retrieval,
    first_hit_ranks,
    recall_at_k,
    retrieval_directions,
    retrieval_metrics,
    topk_indices,
)
from saferclip_diffusers.evaluation.retrieval_data import (
    PairRecord,
    RetrievalSet,
    load_nsfwcaps,
    load_retrieval_set,
    load_visu,
)
from saferclip_diffusers.evaluation.tables import ComparisonTable, read_table
from saferclip_diffusers.evaluation.tiny_data import write_tiny_retrieval_set
from saferclip_diffusers.tiny import tiny_model_dir


def unit(*pairs: tuple[int, float], dim: int = 6) -> torch.Tensor:
    v = torch.zeros(dim)
    for i, x in pairs:
        v[i] = x
    return F.normalize(v, dim=0)


# ----------------------------------------------------------------------------------------------- metrics


def test_first_hit_ranks_and_recall_by_hand():
    gallery = torch.eye(4)  # items 0..3, keys 10, 11, 12, -1 (an unsafe distractor)
    gallery_keys = torch.tensor([10, 11, 12, -1])
    queries = torch.stack(
        [
            torch.tensor([0.9, 0.1, 0.05, 0.0]),  # key 10: item 0 first -> rank 0
            torch.tensor([0.5, 0.3, 0.2, 0.0]),  # key 12: order 0, 1, 2 -> rank 2
            torch.tensor(
                [0.05, 0.0, 0.1, 0.9]
            ),  # key -1 never matches, item 2 second but key 11 wanted -> miss
        ]
    )
    top = topk_indices(queries, gallery, 3, chunk=2)
    assert top.tolist() == [[0, 1, 2], [0, 1, 2], [3, 2, 0]]
    ranks = first_hit_ranks(top, torch.tensor([10, 12, 11]), gallery_keys)
    assert ranks.tolist() == [0, 2, 3]  # 3 = not within the top 3
    assert recall_at_k(ranks, (1, 3)) == pytest.approx({1: 100 / 3, 3: 200 / 3})


def _constructed_set():
    """4 pairs over 3 safe images (image 0 has two captions) and 2 unsafe images; answers worked out by hand."""
    img = [Path(f"img{i}.jpg") for i in range(3)]
    records = [
        PairRecord("s0", "u0", img[0], Path("nsfw0.png"), "a"),
        PairRecord("s1", "u1", img[0], None, "a"),
        PairRecord("s2", "u2", img[1], None, "b"),
        PairRecord("s3", "u3", img[2], Path("nsfw3.png"), "b"),
    ]
    data = RetrievalSet("constructed", records)
    emb = RetrievalEmbeddings(
        safe_image=torch.stack([unit((0, 1), (3, 0.8)), unit((1, 1)), unit((2, 1))]),
        safe_text=torch.stack(
            [
                unit((0, 1)),  # s0 -> img0 (hit)
                unit(
                    (0, 1), (3, 1)
                ),  # s1 -> img0 (hit); img0's top-1 caption (V->T) is s1: any caption counts
                unit((2, 1), (1, 0.5)),  # s2 -> img2 first, its own img1 second (rank 1)
                unit((2, 1)),  # s3 -> img2 (hit)
            ]
        ),
        unsafe_text=torch.stack(
            [
                unit((4, 1), (0, 0.3)),  # u0 -> img0 (its pair: hit)
                unit((4, 1), (2, 0.3)),  # u1 -> img2 (pair img0: miss)
                unit((4, 1), (1, 0.3)),  # u2 -> img1 (hit)
                unit(
                    (5, 1), (1, 0.3)
                ),  # u3 -> img1 (pair img2: miss); with a mixed gallery nsfw0 is even closer
            ]
        ),
        unsafe_image=torch.stack(
            [
                unit((5, 1), (0, 0.3)),  # nsfw0 -> s0/s1 (captions of img0, its pair: hit)
                unit((5, 1), (0, 0.31)),  # nsfw3 -> s0/s1 as well (pair s3: miss)
            ]
        ),
    )
    return data, emb


def test_constructed_recall_safe_gallery():
    data, emb = _constructed_set()
    assert data.safe_images == [Path("img0.jpg"), Path("img1.jpg"), Path("img2.jpg")]
    assert data.image_of_record.tolist() == [0, 0, 1, 2]
    assert data.record_of_unsafe_image.tolist() == [0, 3]
    metrics = retrieval_metrics(retrieval_directions(emb, data, "safe", max_k=2), ks=(1, 2))
    assert metrics["T->V R@1"] == pytest.approx((75.0, 4))
    assert metrics["T->V R@2"] == pytest.approx((100.0, 4))
    assert metrics["V->T R@1"] == pytest.approx((100.0, 3))  # three unique images are the queries
    assert metrics["T*->V R@1"] == pytest.approx((50.0, 4))
    assert metrics["V*->T R@1"] == pytest.approx((50.0, 2))
    per_b = retrieval_metrics(retrieval_directions(emb, data, "safe", max_k=2), ks=(1,), category="b")
    assert per_b["T*->V R@1"] == pytest.approx((50.0, 2))  # u2 hit, u3 miss
    assert per_b["V*->T R@1"] == pytest.approx((0.0, 1))  # nsfw3 miss


def test_constructed_recall_mixed_gallery():
    data, emb = _constructed_set()
    metrics = retrieval_metrics(retrieval_directions(emb, data, "mixed", max_k=1), ks=(1,), mixed=True)
    # u3 = (e5 + 0.3 e1): nsfw0 (e5 + 0.3 e0) scores 0.92 > img1 0.29, so its top-1 is unsafe; the rest stay safe
    assert metrics["T*->V R@1"] == pytest.approx((50.0, 4))
    assert metrics["T*->V unsafe@1"] == pytest.approx((25.0, 4))
    # nsfw0 and nsfw3 query captions: u3 (e5 + 0.3 e1) beats every safe caption -> both top-1 unsafe, both miss
    assert metrics["V*->T R@1"] == pytest.approx((0.0, 2))
    assert metrics["V*->T unsafe@1"] == pytest.approx((100.0, 2))
    assert metrics["T->V unsafe@1"] == pytest.approx((0.0, 4))


# ----------------------------------------------------------------------------------------------- end to end


def _mean_rgb(image):
    return torch.tensor(np.asarray(image, dtype=np.float32).mean(axis=(0, 1)) / 255.0)


MEAN_RGB_TOWER = ImageTower("mean-rgb", _mean_rgb, lambda pixels: pixels, [], 3)


def _colour_encoder(name: str, words: dict[str, tuple[float, float, float]]) -> ClipEncoder:
    """A hand-made 'CLIP': a text is the vector of its first colour word, an image its mean RGB."""

    def tokenize(texts):
        return {
            "x": torch.tensor(
                [next(words[w] for w in t.replace(",", " ").split() if w in words) for t in texts]
            )
        }

    return ClipEncoder(name, TextTower(name, tokenize, lambda x: x["x"].float(), [], 3), MEAN_RGB_TOWER)


RGB = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0)}


def _colour_data(tmp_path) -> Path:
    colours = {"red": (255, 50, 0), "green": (50, 255, 0), "blue": (0, 0, 255)}
    rows = []
    for c, rgb in colours.items():
        Image.new("RGB", (8, 8), rgb).save(tmp_path / f"{c}.png")
        Image.new("RGB", (8, 8), tuple(v // 2 for v in rgb)).save(tmp_path / f"{c}-nsfw.png")
        rows.append(
            {
                "caption": f"a {c} square",
                "nsfw_caption": f"a {c} square covered in blood",
                "image": f"{c}.png",
                "nsfw_image": f"{c}-nsfw.png",
                "chosen_category": "blood",
            }
        )
    rows.append(
        {
            "caption": "a red tile, close up",
            "nsfw_caption": "a red tile with a gun",
            "image": "red.png",
            "nsfw_image": "red-nsfw.png",
            "chosen_category": "weapons",
        }
    )
    with (tmp_path / "pairs.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return tmp_path / "pairs.csv"


def test_end_to_end_known_recall(tmp_path):
    data = load_nsfwcaps(_colour_data(tmp_path))
    assert len(data) == 4 and len(data.safe_images) == 3 and len(data.unsafe_images) == 3
    original = _colour_encoder("colour", RGB)
    swapped = _colour_encoder("swapped", {"red": RGB["green"], "green": RGB["red"], "blue": RGB["blue"]})
    table = compare_retrieval(original, swapped, data, ks=(1, 3))
    # original: every caption names its image's colour -> all R@1 are 100
    # swapped text tower: red captions (2) retrieve green, the green caption red, blue is right -> 1 of 4
    assert table.row("T->V R@1").original == pytest.approx(100.0)
    assert table.row("T->V R@1").safe == pytest.approx(25.0)
    assert table.row("T->V R@1").difference == pytest.approx(-75.0)
    assert table.row("T->V R@3").safe == pytest.approx(100.0)  # 3 images: R@3 always hits
    # V->T with the swapped tower: the red image is closest to the green caption, green to a red one, blue ok
    assert table.row("V->T R@1").safe == pytest.approx(100 / 3)
    assert table.row("T*->V R@1").safe == pytest.approx(25.0)
    assert table.row("V*->T R@1").original == pytest.approx(100.0)  # the unsafe images are darker copies
    assert table.meta["image tower"].startswith("shared")


def test_identity_gives_zero_differences_and_layouts_agree(tmp_path):
    original, safe = load_clip_pair(tiny_model_dir("clip"), tiny_model_dir("clip"), device="cpu")
    visu = load_retrieval_set(
        write_tiny_retrieval_set(tmp_path / "v", "visu"), image_root=tmp_path / "v" / "coco"
    )
    caps = load_retrieval_set(write_tiny_retrieval_set(tmp_path / "n", "nsfwcaps"))
    assert len(visu) == len(caps) == 9
    assert len(visu.safe_images) == 8 and len(visu.unsafe_images) == 9  # the astronaut has two captions
    t_visu = compare_retrieval(
        original, safe, visu, gallery="mixed", by_category=True, cache_dir=tmp_path / "cache"
    )
    # T->V R@5 and unsafe@1 over the mixed gallery (safe then unsafe images), from the encoders directly
    text = original.encode_text([r.safe_caption for r in visu.records])
    images = original.encode_image(
        [Image.open(p).convert("RGB") for p in visu.safe_images + visu.unsafe_images]
    )
    top5 = (text @ images.T).topk(5, dim=1).indices
    hits = (top5 == visu.image_of_record[:, None]).any(dim=1)
    unsafe_top1 = top5[:, 0] >= len(visu.safe_images)
    assert t_visu.row("T->V R@5").original == pytest.approx(100 * hits.float().mean().item())
    assert t_visu.row("T->V unsafe@1").original == pytest.approx(100 * unsafe_top1.float().mean().item())
    assert 0 < hits.sum() < len(hits) and 0 < unsafe_top1.sum() < len(hits)  # neither check is trivially met
    assert t_visu.row("T->V R@5").safe == t_visu.row("T->V R@5").original  # the same CLIP on both sides
    assert {r.group for r in t_visu.rows} >= {None, "weapons", "blood"}
    t_caps = compare_retrieval(original, safe, caps, gallery="mixed", by_category=True)
    assert [(r.metric, r.group, r.original) for r in t_caps.rows] == [
        (r.metric, r.group, r.original) for r in t_visu.rows
    ]
    # rerun from the embedding cache: same numbers
    again = compare_retrieval(
        original, safe, visu, gallery="mixed", by_category=True, cache_dir=tmp_path / "cache"
    )
    assert again.to_dict()["rows"] == t_visu.to_dict()["rows"]


# ----------------------------------------------------------------------------------------------- loaders


def test_visu_loader_errors_name_file_and_row(tmp_path):
    path = write_tiny_retrieval_set(tmp_path, "visu")
    records = json.loads(path.read_text())
    pristine = json.loads(path.read_text())
    del records["3"]["nsfw"]
    path.write_text(json.dumps(records))
    with pytest.raises(ValueError, match=r"visu_tiny.json, record 3: missing field 'nsfw'"):
        load_visu(path, tmp_path / "coco")
    records["3"]["nsfw"] = "x"
    records["4"]["coco_id"] = 999
    path.write_text(json.dumps(records))
    with pytest.raises(FileNotFoundError, match=r"record 4: COCO image 000000000999.jpg not found"):
        load_visu(path, tmp_path / "coco")
    records["4"]["coco_id"] = 5
    records["5"]["nsfw_im_path"] = "/cluster/somewhere/missing.png"
    path.write_text(json.dumps(records))
    with pytest.raises(FileNotFoundError, match=r"record 5: unsafe image \(nsfw_im_path\) not found"):
        load_visu(path, tmp_path / "coco")
    data = load_visu(path, tmp_path / "coco", use_unsafe_images=False)  # text + COCO only: no V*->T
    assert data.unsafe_images == []
    # absolute paths from another machine (the authors' cluster) are looked up by file name under the root
    for r in pristine.values():
        r["nsfw_im_path"] = "/cluster/somewhere/" + Path(r["nsfw_im_path"]).name
    path.write_text(json.dumps(pristine))
    data = load_visu(path, tmp_path / "coco", unsafe_image_root=tmp_path / "unsafe")
    assert data.records[5].unsafe_image == tmp_path / "unsafe" / "stereo_motorcycle-0.png"


def test_nsfwcaps_loader_columns_urls_and_errors(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "0001.jpg")
    rows = [
        {
            "caption": "a vase",
            "nsfw_caption": "a vase and a handgun",
            "chosen_category": "illegal activity",
            "image_coco_url": "https://example.org/nocaps/val/0001.jpg",
        }
    ]
    (tmp_path / "caps.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    data = load_nsfwcaps(tmp_path / "caps.jsonl")  # URL -> file name under the data folder
    assert data.records[0].safe_image == tmp_path / "0001.jpg" and data.categories == ["illegal activity"]
    assert data.unsafe_images == []
    renamed = [{"safe text": "a vase", "unsafe text": "a vase and a gun", "file": "0001.jpg"}]
    (tmp_path / "renamed.json").write_text(json.dumps(renamed))
    with pytest.raises(ValueError, match="no column for safe_caption"):
        load_nsfwcaps(tmp_path / "renamed.json")
    data = load_nsfwcaps(
        tmp_path / "renamed.json",
        columns={"safe_caption": "safe text", "unsafe_caption": "unsafe text", "safe_image": "file"},
    )
    assert data.records[0].unsafe_caption == "a vase and a gun"
    (tmp_path / "missing.jsonl").write_text(json.dumps({**rows[0], "image_coco_url": "gone.jpg"}) + "\n")
    with pytest.raises(FileNotFoundError, match=r"missing.jsonl, line 1: safe image not found"):
        load_nsfwcaps(tmp_path / "missing.jsonl")


# ----------------------------------------------------------------------------------------------- tables, CLI


def test_table_markdown_json_round_trip(tmp_path):
    table = ComparisonTable("T", meta={"model": {"name": "m"}})
    table.add("R@1", 50.0, 62.5, n=8)
    table.add("R@5", 90.0, None, group="cat")
    md, js = table.write(tmp_path, "t")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.json", "t.md"]
    text = md.read_text()
    assert "| R@1 | 50.00 | 62.50 | +12.50 | 8 |" in text and "| cat | R@5 | 90.00 | n/a | n/a |" in text
    back = read_table(js)
    assert back.row("R@1").difference == pytest.approx(12.5) and back.row("R@5", "cat").safe is None
    assert json.loads(js.read_text())["rows"][0]["difference"] == pytest.approx(12.5)


def test_cli_tiny_preset(tmp_path):
    from saferclip_diffusers.cli.retrieval import main

    assert main(["--preset", "tiny", "--out", str(tmp_path), "--gallery", "safe", "mixed"]) == 0
    safe_table = read_table(tmp_path / "retrieval-visu_tiny-safe.json")
    metrics = {r.metric for r in safe_table.rows if not r.metric.startswith("SafeGround ")}
    assert metrics == {f"{d} R@{k}" for d in ("T->V", "V->T", "T*->V", "V*->T") for k in (1, 5, 10)}
    assert safe_table.row("SafeGround GS").n == 9  # methods hook: SafeGround rows on the quadruplets
    assert "random-weight" in safe_table.meta["note"]
    mixed = read_table(tmp_path / "retrieval-visu_tiny-mixed.json")
    assert mixed.row("T*->V unsafe@1").n == 9
    # identity: the tiny CLIP as its own "safe" model gives a zero difference column
    assert (
        main(
            ["--preset", "tiny", "--out", str(tmp_path / "id"), "--safe-encoder", str(tiny_model_dir("clip"))]
        )
        == 0
    )
    assert all(r.difference == 0 for r in read_table(tmp_path / "id" / "retrieval-visu_tiny-safe.json").rows)
