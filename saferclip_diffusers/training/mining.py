"""Proximity targets: for every unsafe caption, its nearest safe caption in the frozen encoder's space.

SafeR-CLIP (Sec. "proximity-based target selection"): ``t̂_i = t_j`` with ``j = argmax_j cos(T0(t*_i), T0(t_j))``
over all safe captions of the training set, computed once before training. The search runs in chunks over
both the queries and the keys, so memory stays bounded (``chunk_size x chunk_size`` similarities at a time)
whatever the size of the pool. Duplicate captions are removed first (:func:`dedupe`), so each distinct safe
caption is one key. The similarity of the match is the pair's *difficulty* score (high = easy) used by the
curriculum.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F


def normalise_caption(text: str) -> str:
    """The key under which two captions count as duplicates: case-folded, whitespace collapsed."""
    return re.sub(r"\s+", " ", text).strip().casefold()


def dedupe(texts: list[str]) -> tuple[list[int], list[int]]:
    """Indices of the first occurrence of each distinct caption, and for every caption its unique index.

    Returns ``(keep, inverse)``: ``[texts[i] for i in keep]`` are the distinct captions in first-seen order
    and ``inverse[i]`` is the position in that list of ``texts[i]``'s caption.
    """
    first: dict[str, int] = {}
    keep: list[int] = []
    inverse: list[int] = []
    for i, text in enumerate(texts):
        key = normalise_caption(text)
        if key not in first:
            first[key] = len(keep)
            keep.append(i)
        inverse.append(first[key])
    return keep, inverse


@torch.no_grad()
def nearest_neighbours(
    queries: torch.Tensor,
    keys: torch.Tensor,
    chunk_size: int = 4096,
    show_progress: bool = False,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine nearest key for every query, in ``chunk_size`` blocks: returns ``(index, similarity)`` on CPU.

    ``queries`` is ``(N, d)``, ``keys`` is ``(M, d)``; neither needs to be normalised. Ties go to the lowest
    key index (as ``torch.argmax`` on the full matrix would). ``device``: where the blocks are multiplied
    (e.g. the GPU; the inputs and results stay on the CPU).
    """
    if keys.shape[0] == 0:
        raise ValueError("proximity mining needs at least one safe caption (the key set is empty)")
    if queries.shape[-1] != keys.shape[-1]:
        raise ValueError(f"query dim {queries.shape[-1]} != key dim {keys.shape[-1]}")
    n = queries.shape[0]
    best_sim = torch.full((n,), -float("inf"))
    best_idx = torch.zeros(n, dtype=torch.long)
    blocks = range(0, n, chunk_size)
    if show_progress:
        from tqdm.auto import tqdm

        blocks = tqdm(blocks, desc="mining proximity targets", unit="chunk")
    for qs in blocks:
        q = F.normalize(queries[qs : qs + chunk_size].float().to(device), dim=-1)
        sim_q = torch.full((q.shape[0],), -float("inf"))
        idx_q = torch.zeros(q.shape[0], dtype=torch.long)
        for ks in range(0, keys.shape[0], chunk_size):
            k = F.normalize(keys[ks : ks + chunk_size].float().to(q.device), dim=-1)
            sim, idx = (q @ k.T).max(dim=1)
            better = sim.cpu() > sim_q  # strict: keep the earlier key on ties
            sim_q = torch.where(better, sim.cpu(), sim_q)
            idx_q = torch.where(better, idx.cpu() + ks, idx_q)
        best_sim[qs : qs + q.shape[0]] = sim_q
        best_idx[qs : qs + q.shape[0]] = idx_q
    return best_idx, best_sim


def mine_targets(
    unsafe: torch.Tensor,
    safe: torch.Tensor,
    candidates: torch.Tensor | None = None,
    chunk_size: int = 4096,
    show_progress: bool = False,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Proximity target (index into ``safe``) and its similarity for each row of ``unsafe``.

    ``candidates`` restricts the search to those safe rows (e.g. the training pool, leaving validation
    captions out); returned indices still index the full ``safe`` tensor.
    """
    if candidates is None:  # search every row in place: no copy of the safe matrix
        return nearest_neighbours(unsafe, safe, chunk_size, show_progress, device)
    idx, sim = nearest_neighbours(unsafe, safe[candidates], chunk_size, show_progress, device)
    return candidates[idx], sim
