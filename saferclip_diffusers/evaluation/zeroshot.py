"""Zero-shot classification on ImageFolder-style data, original vs safe CLIP (knowledge preservation).

A data set is a folder with one sub-folder per class (torchvision's ImageFolder layout and class order). Class
names come from the folder names (``_`` -> space), from ImageNet's names (open_clip ships them; picked
automatically when the folders are the 1,000 ImageNet WordNet ids), or from a mapping file: JSON
(``{folder: name}`` or a list in sorted-folder order) or TXT (one name per line, sorted-folder order).

Each class's text embedding is the normalised mean of its prompt embeddings over the templates (CLIP's prompt
ensembling); an image is classified by the highest cosine. Reports top-1 and top-5 accuracy in percent.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .clip_models import ClipEncoder, cached_embeddings
from .tables import ComparisonTable

_WNID = re.compile(r"^n\d{8}$")
Template = str | Callable[[str], str]


def _open_clip_metadata():
    from open_clip import zero_shot_metadata

    return zero_shot_metadata


def template_sets() -> dict[str, list[Template]]:
    """Named template sets: ``openai-imagenet`` (CLIP's 80), ``simple-imagenet`` (7), ``photo`` (1)."""
    meta = _open_clip_metadata()
    return {
        "openai-imagenet": list(meta.OPENAI_IMAGENET_TEMPLATES),
        "simple-imagenet": list(meta.SIMPLE_IMAGENET_TEMPLATES),
        "photo": ["a photo of a {}."],
    }


def resolve_templates(spec: str | os.PathLike | Sequence[Template]) -> list[Template]:
    """A named set (see :func:`template_sets`), a TXT file (one template per line with ``{}``), or a list."""
    if not isinstance(spec, (str, os.PathLike)):
        templates = list(spec)
    elif str(spec) in template_sets():
        return template_sets()[str(spec)]
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ValueError(f"templates {spec!r}: not a named set ({', '.join(template_sets())}) nor a file")
        templates = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not templates:
        raise ValueError(f"templates {spec!r}: empty")
    for t in templates:
        if isinstance(t, str) and "{}" not in t and "{c}" not in t:
            raise ValueError(f"template {t!r} has no '{{}}' (or '{{c}}') where the class name goes")
    return templates


def format_template(template: Template, classname: str) -> str:
    if callable(template):
        return template(classname)
    return template.replace("{c}", classname) if "{c}" in template else template.replace("{}", classname)


@dataclass
class ImageFolderSet:
    """An ImageFolder-style data set: class folders (sorted), their names, and (image path, class index) samples."""

    name: str
    root: Path
    folders: list[str]
    classnames: list[str]
    samples: list[tuple[Path, int]]

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor([label for _, label in self.samples], dtype=torch.long)


def read_classnames(spec: str | os.PathLike | None, folders: Sequence[str]) -> list[str]:
    """Class names for ``folders`` (sorted): ``None`` (folder names, or ImageNet's for WordNet-id folders),
    ``"imagenet"``, or a JSON/TXT mapping file."""
    folders = list(folders)
    if spec is None:
        if len(folders) == 1000 and all(_WNID.match(f) for f in folders):
            spec = "imagenet"
        else:
            return [f.replace("_", " ") for f in folders]
    if str(spec) == "imagenet":
        names = list(_open_clip_metadata().IMAGENET_CLASSNAMES)
        if len(folders) != len(names):
            raise ValueError(f"ImageNet class names need the 1000 class folders; found {len(folders)}")
        return names
    path = Path(spec).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"class name mapping not found: {path} (give a .json or .txt file, or 'imagenet')"
        )
    if path.suffix.lower() == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            missing = [f for f in folders if f not in data]
            if missing:
                raise ValueError(f"{path}: no class name for folder(s) {missing[:10]}")
            return [str(data[f]) for f in folders]
        names = [str(n) for n in data]
    else:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(names) != len(folders):
        raise ValueError(f"{path}: {len(names)} class names for {len(folders)} class folders (sorted order)")
    return names


def load_image_folder(
    root: str | os.PathLike,
    classnames: str | os.PathLike | None = None,
    name: str | None = None,
    limit_per_class: int | None = None,
) -> ImageFolderSet:
    """Scan an ImageFolder-style data set (torchvision's class order and image extensions)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"zero-shot data folder not found: {root}")
    try:
        folders, class_to_idx = find_classes(root)
        samples = make_dataset(root, class_to_idx, extensions=IMG_EXTENSIONS)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{root}: expected one sub-folder of images per class ({err})") from err
    if limit_per_class is not None:
        counts: Counter[int] = Counter()
        kept = []
        for path, label in samples:
            if counts[label] < limit_per_class:
                kept.append((path, label))
                counts[label] += 1
        samples = kept
    return ImageFolderSet(
        name or root.name,
        root,
        folders,
        read_classnames(classnames, folders),
        [(Path(p), c) for p, c in samples],
    )


def zeroshot_classifier(
    model: ClipEncoder, classnames: Sequence[str], templates: Sequence[Template], batch_size: int = 256
) -> torch.Tensor:
    """(classes, dim) normalised class embeddings: the mean over templates of the normalised prompt embeddings."""
    texts = [format_template(t, c) for c in classnames for t in templates]
    emb = model.encode_text(texts, batch_size, desc=f"{model.name}: class prompts")
    return F.normalize(emb.view(len(classnames), len(templates), -1).mean(dim=1), dim=-1)


def topk_accuracy(
    image_emb: torch.Tensor, classifier: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)
) -> dict[int, float]:
    """Top-K accuracy in percent (K is capped at the number of classes)."""
    top = (image_emb @ classifier.T).topk(min(max(ks), classifier.shape[0]), dim=1).indices
    hits = top == labels[:, None]
    return {k: 100.0 * hits[:, :k].any(dim=1).float().mean().item() for k in ks}


def _image_embeddings(
    model: ClipEncoder,
    data: ImageFolderSet,
    role: str,
    cache_dir: str | os.PathLike | None,
    batch_size: int,
    num_workers: int,
) -> torch.Tensor:
    paths = [p for p, _ in data.samples]
    path = Path(cache_dir) / f"{data.name.replace('/', '_')}-{role}-images.safetensors" if cache_dir else None
    fingerprint = {
        "tower": model.describe()["image_tower"],
        "dtype": str(model.dtype),
        "items": [str(p) for p in paths],
    }
    return cached_embeddings(
        path,
        fingerprint,
        lambda: model.encode_image(paths, batch_size, num_workers, f"{role}: {data.name} images"),
    )


def compare_zeroshot(
    original: ClipEncoder,
    safe: ClipEncoder,
    datasets: Sequence[ImageFolderSet],
    templates: Sequence[Template],
    *,
    ks: Sequence[int] = (1, 5),
    batch_size: int = 256,
    image_batch_size: int = 64,
    num_workers: int = 0,
    cache_dir: str | os.PathLike | None = None,
) -> ComparisonTable:
    """Top-K accuracy per data set (and their mean), original vs safe."""
    shared = safe.shares_image_tower(original)
    table = ComparisonTable(
        "Zero-shot classification",
        meta={
            "original": original.describe(),
            "safe": safe.describe(),
            "image tower": "shared (only the text tower differs)" if shared else "differs",
            "templates": len(templates),
            "metric": "top-K accuracy in % (class embedding = mean over templates)",
        },
    )
    means: dict[str, list[tuple[float, float]]] = {}
    for data in datasets:
        if not data.samples:
            raise ValueError(f"{data.root}: no images found")
        img_o = _image_embeddings(original, data, "original", cache_dir, image_batch_size, num_workers)
        img_s = (
            img_o
            if shared
            else _image_embeddings(safe, data, "safe", cache_dir, image_batch_size, num_workers)
        )
        acc_o = topk_accuracy(
            img_o, zeroshot_classifier(original, data.classnames, templates, batch_size), data.labels, ks
        )
        acc_s = topk_accuracy(
            img_s, zeroshot_classifier(safe, data.classnames, templates, batch_size), data.labels, ks
        )
        for k in ks:
            table.add(f"top-{k}", acc_o[k], acc_s[k], group=data.name, n=len(data.samples))
            means.setdefault(f"top-{k}", []).append((acc_o[k], acc_s[k]))
    if len(datasets) > 1:
        for metric, pairs in means.items():
            table.add(
                metric,
                sum(o for o, _ in pairs) / len(pairs),
                sum(s for _, s in pairs) / len(pairs),
                group=f"mean of {len(datasets)}",
            )
    return table


# ----------------------------------------------------------------------------------------------- tiny data

_TINY_CLASSES = {
    "astronaut": "astronaut",
    "cat": "chelsea",
    "coffee": "coffee",
    "rocket": "rocket",
    "motorcycle": "stereo_motorcycle",
    "coins": "coins",
}


def write_tiny_image_folder(directory: str | os.PathLike) -> Path:
    """An ImageFolder of scikit-image photographs: 6 classes x 3 views (photo, mirror, centre crop)."""
    from PIL import ImageOps

    from .tiny_data import tiny_photographs

    directory = Path(directory)
    photos = tiny_photographs()
    for folder, photo in _TINY_CLASSES.items():
        image = photos[photo]
        w, h = image.size
        crop = image.crop((w // 6, h // 6, w - w // 6, h - h // 6))
        (directory / folder).mkdir(parents=True, exist_ok=True)
        for i, view in enumerate((image, ImageOps.mirror(image), crop)):
            view.save(directory / folder / f"{folder}_{i}.png")
    return directory
