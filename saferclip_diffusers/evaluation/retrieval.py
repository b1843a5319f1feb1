"""Cross-modal retrieval on safe/unsafe pairs (ViSU and NSFWCaps layouts), original vs safe CLIP.

Directions (SafeR-CLIP Table 1; Safe-CLIP ``training/recall_computation.py``):

- ``T->V``: safe caption -> safe images; correct = the caption's image.
- ``V->T``: safe image -> safe captions; correct = any caption of that image.
- ``T*->V``: unsafe caption -> safe images; correct = the safe image paired with it.
- ``V*->T``: unsafe image -> safe captions; correct = the safe caption paired with it (any caption of the
  paired safe image counts, as for ``V->T``).

R@K is the percentage of queries with a correct item among their K most similar gallery items (cosine of
L2-normalised projected embeddings). The gallery is the safe modality only (``gallery="safe"``, as in Safe-CLIP's
code) or safe and unsafe items together (``gallery="mixed"``, as HySAC's T*->(V u V*)); unsafe gallery items are
never correct, and a mixed gallery also reports ``unsafe@1``: the percentage of queries whose top-1 is unsafe.

The data (pairs, layouts, the tiny set) lives in :mod:`.retrieval_data`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .clip_models import ClipEncoder, cached_embeddings
from .retrieval_data import RetrievalSet
from .tables import ComparisonTable

DIRECTIONS = ("T->V", "V->T", "T*->V", "V*->T")
GALLERIES = ("safe", "mixed")


# ----------------------------------------------------------------------------------------------- metrics


def topk_indices(queries: torch.Tensor, gallery: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """Indices of the ``k`` gallery rows with the highest dot product for each query (most similar first)."""
    k = min(k, gallery.shape[0])
    out = [
        (queries[s : s + chunk] @ gallery.T).topk(k, dim=1).indices for s in range(0, queries.shape[0], chunk)
    ]
    return torch.cat(out) if out else torch.empty(0, k, dtype=torch.long)


def first_hit_ranks(top: torch.Tensor, query_keys: torch.Tensor, gallery_keys: torch.Tensor) -> torch.Tensor:
    """0-based rank of the first gallery item whose key equals the query's, or ``top.shape[1]`` if none.

    Negative gallery keys never match (unsafe distractors).
    """
    hits = (gallery_keys[top] == query_keys[:, None]) & (gallery_keys[top] >= 0)
    miss = torch.full((top.shape[0],), top.shape[1], dtype=torch.long)
    return torch.where(hits.any(dim=1), hits.int().argmax(dim=1), miss)


def recall_at_k(ranks: torch.Tensor, ks: Iterable[int]) -> dict[int, float]:
    """R@K in percent from first-hit ranks."""
    return {k: 100.0 * (ranks < k).float().mean().item() if len(ranks) else float("nan") for k in ks}


@dataclass
class RetrievalEmbeddings:
    safe_text: torch.Tensor
    unsafe_text: torch.Tensor
    safe_image: torch.Tensor
    unsafe_image: torch.Tensor


@dataclass
class DirectionResult:
    """Per-query outcome of one direction: first-hit ranks, whether the top-1 is unsafe, query categories."""

    ranks: torch.Tensor
    top1_unsafe: torch.Tensor
    categories: list[str | None]


def embed_retrieval_set(
    model: ClipEncoder,
    data: RetrievalSet,
    *,
    batch_size: int = 256,
    image_batch_size: int = 64,
    num_workers: int = 0,
    cache_dir: str | os.PathLike | None = None,
    role: str = "model",
    reuse_images: RetrievalEmbeddings | None = None,
) -> RetrievalEmbeddings:
    """Embed captions and (deduplicated) images; ``reuse_images`` skips images when the image tower is shared."""

    def cached(kind: str, items: Sequence, compute) -> torch.Tensor:
        path = Path(cache_dir) / f"{role}-{kind}.safetensors" if cache_dir else None
        tower = model.describe()["image_tower" if kind.endswith("image") else "text_tower"]
        return cached_embeddings(
            path, {"tower": tower, "dtype": str(model.dtype), "items": [str(i) for i in items]}, compute
        )

    safe_text = cached(
        "safe-text",
        [r.safe_caption for r in data.records],
        lambda: model.encode_text(
            [r.safe_caption for r in data.records], batch_size, f"{role}: safe captions"
        ),
    )
    unsafe_text = cached(
        "unsafe-text",
        [r.unsafe_caption for r in data.records],
        lambda: model.encode_text(
            [r.unsafe_caption for r in data.records], batch_size, f"{role}: unsafe captions"
        ),
    )
    if reuse_images is not None:
        return RetrievalEmbeddings(safe_text, unsafe_text, reuse_images.safe_image, reuse_images.unsafe_image)
    safe_image = cached(
        "safe-image",
        data.safe_images,
        lambda: model.encode_image(data.safe_images, image_batch_size, num_workers, f"{role}: safe images"),
    )
    unsafe_image = cached(
        "unsafe-image",
        data.unsafe_images,
        lambda: model.encode_image(
            data.unsafe_images, image_batch_size, num_workers, f"{role}: unsafe images"
        ),
    )
    return RetrievalEmbeddings(safe_text, unsafe_text, safe_image, unsafe_image)


def retrieval_directions(
    emb: RetrievalEmbeddings, data: RetrievalSet, gallery: str = "safe", max_k: int = 10
) -> dict[str, DirectionResult]:
    """Run the four directions; V*->T is absent when the data has no unsafe images."""
    if gallery not in GALLERIES:
        raise ValueError(f"gallery must be one of {GALLERIES}, got {gallery!r}")
    mixed = gallery == "mixed"
    image_key = torch.arange(len(data.safe_images))
    caption_key = data.image_of_record  # a safe caption is correct for its own image
    cats = [r.category for r in data.records]

    # image galleries (T->V, T*->V) and caption galleries (V->T, V*->T); unsafe distractors carry key -1
    img_gallery, img_keys, img_unsafe = (
        emb.safe_image,
        image_key,
        torch.zeros(len(image_key), dtype=torch.bool),
    )
    if mixed and len(data.unsafe_images):
        img_gallery = torch.cat([emb.safe_image, emb.unsafe_image])
        img_keys = torch.cat([image_key, torch.full((len(data.unsafe_images),), -1)])
        img_unsafe = torch.cat([img_unsafe, torch.ones(len(data.unsafe_images), dtype=torch.bool)])
    txt_gallery, txt_keys, txt_unsafe = emb.safe_text, caption_key, torch.zeros(len(data), dtype=torch.bool)
    if mixed:
        txt_gallery = torch.cat([emb.safe_text, emb.unsafe_text])
        txt_keys = torch.cat([caption_key, torch.full((len(data),), -1)])
        txt_unsafe = torch.cat([txt_unsafe, torch.ones(len(data), dtype=torch.bool)])

    def run(queries, query_keys, gal, gal_keys, gal_unsafe, categories) -> DirectionResult:
        top = topk_indices(queries, gal, max_k)
        return DirectionResult(first_hit_ranks(top, query_keys, gal_keys), gal_unsafe[top[:, 0]], categories)

    results = {
        "T->V": run(emb.safe_text, caption_key, img_gallery, img_keys, img_unsafe, cats),
        "V->T": run(emb.safe_image, image_key, txt_gallery, txt_keys, txt_unsafe, [None] * len(image_key)),
        "T*->V": run(emb.unsafe_text, caption_key, img_gallery, img_keys, img_unsafe, cats),
    }
    if len(data.unsafe_images):
        rec = data.record_of_unsafe_image
        results["V*->T"] = run(
            emb.unsafe_image,
            caption_key[rec],
            txt_gallery,
            txt_keys,
            txt_unsafe,
            [cats[i] for i in rec.tolist()],
        )
    return results


def retrieval_metrics(
    results: dict[str, DirectionResult],
    ks: Sequence[int] = (1, 5, 10),
    mixed: bool = False,
    category: str | None = None,
) -> dict[str, tuple[float, int]]:
    """``{"T->V R@1": (value, n_queries), ...}`` (plus ``unsafe@1`` for mixed galleries), optionally per category."""
    out: dict[str, tuple[float, int]] = {}
    for direction in DIRECTIONS:
        if direction not in results:
            continue
        res = results[direction]
        mask = (
            torch.tensor([c == category for c in res.categories])
            if category
            else torch.ones(len(res.ranks), dtype=torch.bool)
        )
        n = int(mask.sum())
        if n == 0:
            continue
        for k, value in recall_at_k(res.ranks[mask], ks).items():
            out[f"{direction} R@{k}"] = (value, n)
        if mixed:
            out[f"{direction} unsafe@1"] = (100.0 * res.top1_unsafe[mask].float().mean().item(), n)
    return out


def compare_retrieval(
    original: ClipEncoder,
    safe: ClipEncoder,
    data: RetrievalSet,
    *,
    gallery: str = "safe",
    ks: Sequence[int] = (1, 5, 10),
    by_category: bool = False,
    batch_size: int = 256,
    image_batch_size: int = 64,
    num_workers: int = 0,
    cache_dir: str | os.PathLike | None = None,
) -> ComparisonTable:
    """R@K for every direction, original vs safe, as a :class:`ComparisonTable` (optionally per category)."""
    kw = dict(
        batch_size=batch_size, image_batch_size=image_batch_size, num_workers=num_workers, cache_dir=cache_dir
    )
    emb_o = embed_retrieval_set(original, data, role="original", **kw)
    shared = safe.shares_image_tower(original)
    emb_s = embed_retrieval_set(safe, data, role="safe", reuse_images=emb_o if shared else None, **kw)
    res_o = retrieval_directions(emb_o, data, gallery, max(ks))
    res_s = retrieval_directions(emb_s, data, gallery, max(ks))
    mixed = gallery == "mixed"
    table = ComparisonTable(
        f"Retrieval on {data.name} ({gallery} gallery)",
        meta={
            "data": data.name,
            "pairs": len(data),
            "safe images": len(data.safe_images),
            "unsafe images": len(data.unsafe_images) or "none (V*->T not measured)",
            "gallery": "safe items only"
            if not mixed
            else "safe and unsafe items (unsafe items are never correct)",
            "original": original.describe(),
            "safe": safe.describe(),
            "image tower": "shared (only the text tower differs)" if shared else "differs",
            "metric": "R@K in %: queries with a correct item among the K most similar; T*/V* = unsafe queries, "
            "whose correct item is their paired safe item",
        },
    )
    groups = [None] + (data.categories if by_category else [])
    for group in groups:
        m_o = retrieval_metrics(res_o, ks, mixed, group)
        m_s = retrieval_metrics(res_s, ks, mixed, group)
        for metric, (value, n) in m_o.items():
            if group is not None and not metric.startswith(("T*->V", "V*->T")):
                continue
            table.add(metric, value, m_s[metric][0], group=group, n=n)
    from .safeground import add_safeground_rows  # methods hook: SafeGround (UWM) rows

    add_safeground_rows(table, emb_o, emb_s, data, ks)
    return table
