"""Held-out validation items of a training data set: which unsafe and safe items validation keeps aside."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .data import SafetyData


@dataclass
class Split:
    """Positions of the training / validation unsafe items and safe captions (indices into ``SafetyData``)."""

    train_unsafe: np.ndarray
    val_unsafe: np.ndarray
    train_safe: np.ndarray
    val_safe: np.ndarray


def split_validation(data: SafetyData, val_size: float, seed: int) -> Split:
    """Hold out ``val_size`` unsafe items (count, or fraction if < 1) and as many safe captions.

    Paired data holds out the validation items' partners (unless a training item shares them); unpaired data
    holds out a random set of safe captions. Held-out safe captions are neither trained on nor mined as targets.
    """
    n_u, n_s = len(data.unsafe_texts), len(data.safe_texts)
    n_val = int(round(val_size * n_u)) if 0 < val_size < 1 else int(val_size)
    if val_size > 0:
        n_val = max(n_val, 1)
    if n_val >= n_u:
        raise ValueError(f"data.val_size={val_size} leaves no training items ({n_u} unsafe captions)")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n_u)
    val_u, train_u = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    if data.paired:
        train_partners = set(data.pair[train_u].tolist())
        val_s = np.asarray(
            sorted({int(p) for p in data.pair[val_u] if p >= 0 and p not in train_partners}), dtype=np.int64
        )
    else:
        n_val_s = min(n_val, max(n_s - 1, 0))
        val_s = np.sort(rng.permutation(n_s)[:n_val_s])
    train_s = np.setdiff1d(np.arange(n_s), val_s)
    if len(train_s) == 0:
        raise ValueError("the validation split leaves no safe captions to train on; lower data.val_size")
    return Split(train_u, val_u, train_s, val_s)
