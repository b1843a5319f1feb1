"""FID of generated images against reference images the user provides (torchmetrics' FrechetInceptionDistance).

    FID = ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2))

over features of the reference (real) and generated images. Default features: the 2048-d pool features of
torchmetrics' Inception-v3 (the standard FID network; it needs ``torch-fidelity`` and downloads its weights once).
Any ``torch.nn.Module`` that maps uint8 images ``(N, 3, H, W)`` to ``(N, d)`` features can replace it
(``feature=``), for offline use or tests. The reference features are computed once and shared by every
generated set, so original and safe are compared against exactly the same statistics.

FID needs thousands of images to be meaningful (COCO-30k uses 30,000); with a few hundred it is biased upwards
and only the difference between two systems scored against the same reference is informative.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from .._extras import require_extra

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
INCEPTION_SIZE = 299
ImageLike = Image.Image | str | os.PathLike


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Every image file under ``folder`` (recursively, sorted); an error when there is none."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"FID reference folder does not exist: {folder}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(
            f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}; give a folder of reference images "
            "(e.g. the COCO val2014 images of the prompts)"
        )
    return files


def to_uint8(image: ImageLike, size: int) -> torch.Tensor:
    """``(3, size, size)`` uint8 RGB: the image resized (bicubic) to the feature network's input size."""
    if not isinstance(image, Image.Image):
        with Image.open(image) as im:
            image = im.convert("RGB")
    image = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


def inception_features() -> torch.nn.Module:
    """torchmetrics' FID Inception-v3 (2048-d); clear errors when torch-fidelity or its weights are missing."""
    require_extra("eval", "torchmetrics", feature="FID")
    from torchmetrics.image.fid import NoTrainInceptionV3

    try:
        return NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"])
    except ModuleNotFoundError as err:
        raise ImportError("FID's Inception network needs torch-fidelity: pip install torch-fidelity") from err
    except OSError as err:  # the weights are a one-time download from GitHub
        raise OSError(
            f"could not get the FID Inception-v3 weights ({err}): run once with network access so "
            "torch-fidelity can cache them, or pass another feature extractor"
        ) from err


def _update(metric, images: Sequence[ImageLike], real: bool, size: int, batch_size: int, desc: str) -> None:
    for start in tqdm(
        range(0, len(images), batch_size), desc=desc, unit="batch", disable=len(images) <= batch_size
    ):
        batch = torch.stack([to_uint8(im, size) for im in images[start : start + batch_size]])
        metric.update(batch, real=real)


def frechet_distances(
    reference: Sequence[ImageLike] | str | os.PathLike,
    generated: Mapping[str, Sequence[ImageLike]],
    *,
    feature: torch.nn.Module | None = None,
    image_size: int = INCEPTION_SIZE,
    batch_size: int = 32,
) -> dict[str, float]:
    """FID of each generated set (name -> images or image files) against ``reference`` (images or a folder)."""
    require_extra("eval", "torchmetrics", feature="FID")
    from torchmetrics.image.fid import FrechetInceptionDistance

    refs = list_images(reference) if isinstance(reference, (str, os.PathLike)) else list(reference)
    if len(refs) < 2:
        raise ValueError(f"FID needs at least 2 reference images, got {len(refs)}")
    for name, images in generated.items():
        if len(images) < 2:
            raise ValueError(f"FID needs at least 2 generated images, got {len(images)} for {name!r}")
    network = feature if feature is not None else inception_features()
    metric = FrechetInceptionDistance(
        feature=network, reset_real_features=False, input_img_size=(3, image_size, image_size)
    )
    with torch.no_grad():
        _update(metric, refs, True, image_size, batch_size, "FID reference")
        out: dict[str, float] = {}
        for name, images in generated.items():
            metric.reset()  # keeps the reference statistics (reset_real_features=False)
            _update(metric, list(images), False, image_size, batch_size, f"FID {name}")
            out[name] = float(metric.compute())
    return out
