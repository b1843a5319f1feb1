"""One interface for any CLIP: L2-normalised projected text and image embeddings, and their on-disk cache.

:class:`ClipEncoder` wraps a text tower and an image tower (see :mod:`.clip_loading` for how a CLIP, original or
safe, is loaded from a spec string).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm
from transformers import CLIPTextModel, CLIPTextModelWithProjection

from ..io import atomic_save_safetensors

logger = logging.getLogger(__name__)

Tokenize = Callable[[list[str]], dict[str, torch.Tensor]]
ImageLike = Image.Image | str | os.PathLike


@dataclass
class TextTower:
    """Texts -> projected (not normalised) embeddings. ``source`` names where the weights came from."""

    source: str
    tokenize: Tokenize
    forward: Callable[[dict[str, torch.Tensor]], torch.Tensor]
    modules: list[torch.nn.Module]
    dim: int


@dataclass
class ImageTower:
    """Pixel tensors -> projected (not normalised) embeddings; ``preprocess`` maps one RGB PIL image to pixels."""

    source: str
    preprocess: Callable[[Image.Image], torch.Tensor]
    forward: Callable[[torch.Tensor], torch.Tensor]
    modules: list[torch.nn.Module]
    dim: int


def hf_tokenize(tokenizer: Any, max_positions: int) -> Tokenize:
    max_length = min(int(tokenizer.model_max_length), max_positions)

    def tokenize(texts: list[str]) -> dict[str, torch.Tensor]:
        return dict(
            tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        )

    return tokenize


def hf_text_tower(
    source: str, encoder: torch.nn.Module, tokenize: Tokenize, projection: torch.nn.Linear | None
) -> TextTower:
    """A transformers CLIP text tower: ``CLIPTextModel`` + a projection, or ``CLIPTextModelWithProjection``."""
    if isinstance(encoder, CLIPTextModelWithProjection):
        body, projection = encoder.text_model, encoder.text_projection
    elif isinstance(encoder, CLIPTextModel):
        body = encoder
    else:
        raise TypeError(
            f"expected a CLIPTextModel or CLIPTextModelWithProjection, got {type(encoder).__name__}"
        )
    if projection is None:
        raise ValueError(f"{source}: a CLIPTextModel has no text projection and none was given")
    if body.config.hidden_size != projection.in_features:
        raise ValueError(
            f"{source}: the text encoder is {body.config.hidden_size} wide but the text projection expects "
            f"{projection.in_features}; the safe text encoder must come from the same CLIP architecture"
        )

    def forward(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return projection(body(**inputs).pooler_output)

    return TextTower(source, tokenize, forward, [body, projection], projection.out_features)


class _ImageItems(torch.utils.data.Dataset):
    def __init__(self, items: Sequence[ImageLike], preprocess: Callable[[Image.Image], torch.Tensor]):
        self.items, self.preprocess = items, preprocess

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> torch.Tensor:
        item = self.items[i]
        if isinstance(item, Image.Image):
            return self.preprocess(item.convert("RGB"))
        try:
            with Image.open(item) as im:
                image = im.convert("RGB")
        except (OSError, ValueError) as err:
            raise ValueError(f"could not read image {item}: {err}") from err
        return self.preprocess(image)


@dataclass
class ClipEncoder:
    """A CLIP (text tower + image tower) returning L2-normalised float32 CPU embeddings."""

    name: str
    text: TextTower
    image: ImageTower
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    open_clip_model: Any = field(
        default=None, repr=False
    )  # kept for text-tower replacement (projection, vocab)
    open_clip_tokenizer: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.text.dim != self.image.dim:
            raise ValueError(
                f"{self.name}: text embeddings have {self.text.dim} dims but image embeddings {self.image.dim}; "
                "the text and image towers come from different CLIP architectures"
            )
        for module in self.text.modules + self.image.modules:
            module.to(self.device, self.dtype).eval().requires_grad_(False)

    @property
    def dim(self) -> int:
        return self.text.dim

    def describe(self) -> dict[str, str]:
        return {"name": self.name, "text_tower": self.text.source, "image_tower": self.image.source}

    def shares_image_tower(self, other: ClipEncoder) -> bool:
        """Whether ``other`` embeds images with the very same modules (image embeddings can be reused)."""
        return self.image is other.image or [id(m) for m in self.image.modules] == [
            id(m) for m in other.image.modules
        ]

    @torch.inference_mode()
    def encode_text(
        self, texts: Sequence[str], batch_size: int = 256, desc: str | None = None
    ) -> torch.Tensor:
        texts = [str(t) for t in texts]
        out = []
        for start in tqdm(
            range(0, len(texts), batch_size),
            desc=desc or f"{self.name}: text",
            unit="batch",
            disable=len(texts) <= batch_size,
        ):
            inputs = {
                k: v.to(self.device) for k, v in self.text.tokenize(texts[start : start + batch_size]).items()
            }
            out.append(F.normalize(self.text.forward(inputs).float(), dim=-1).cpu())
        return torch.cat(out) if out else torch.empty(0, self.dim)

    @torch.inference_mode()
    def encode_image(
        self, images: Sequence[ImageLike], batch_size: int = 64, num_workers: int = 0, desc: str | None = None
    ) -> torch.Tensor:
        loader = torch.utils.data.DataLoader(
            _ImageItems(list(images), self.image.preprocess), batch_size=batch_size, num_workers=num_workers
        )
        out = []
        for pixels in tqdm(
            loader, desc=desc or f"{self.name}: images", unit="batch", disable=len(loader) <= 1
        ):
            out.append(
                F.normalize(self.image.forward(pixels.to(self.device, self.dtype)).float(), dim=-1).cpu()
            )
        return torch.cat(out) if out else torch.empty(0, self.dim)


def cached_embeddings(
    path: str | os.PathLike | None, fingerprint: Any, compute: Callable[[], torch.Tensor]
) -> torch.Tensor:
    """``compute()``, saved to (and on a rerun read back from) ``path`` when its fingerprint matches.

    The fingerprint is any JSON-able description of what was embedded and by which model; a changed model or
    item list recomputes. Files are safetensors written atomically; an unreadable (corrupt) file is a cache, so it
    is recomputed with a warning.
    """
    if path is None:
        return compute()
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    key = hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()
    if path.is_file():
        try:
            with safe_open(str(path), "pt") as f:
                stored = (f.metadata() or {}).get("fingerprint")
            if stored == key:
                return load_file(str(path))["embeddings"]
        except Exception as err:  # noqa: BLE001 - safetensors raises several types for a damaged file
            logger.warning("the embedding cache %s is unreadable (%s); recomputing it", path, err)
    embeddings = compute()
    atomic_save_safetensors({"embeddings": embeddings.contiguous()}, path, metadata={"fingerprint": key})
    return embeddings
