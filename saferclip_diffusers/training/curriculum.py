"""Easy-to-hard curriculum (SafeR-CLIP "progressive training").

A pair's difficulty is the frozen cosine between the unsafe caption and its redirection target: a high
similarity is an *easy* redirection (little has to move). The pairs are split into buckets at quantiles of that
similarity (tertiles by default: the top third is ``easy``, the middle ``medium``, the bottom ``hard``) and the
schedule opens them stage by stage: epoch 1 easy, epoch 2 easy + medium, epoch 3 onwards everything. Epochs
past the last stage keep using the last stage. Turned off, every epoch uses every pair.
"""

from __future__ import annotations

import numpy as np

BUCKET_NAMES = ("easy", "medium", "hard")


def bucket_names(num_buckets: int) -> list[str]:
    if num_buckets == 3:
        return list(BUCKET_NAMES)
    return [f"level{i}" for i in range(num_buckets)]  # level0 = easiest


def difficulty_buckets(
    similarity: np.ndarray, quantiles: list[float] | tuple[float, ...] = (1 / 3, 2 / 3)
) -> np.ndarray:
    """Bucket index per pair: 0 = easiest (highest similarity) ... ``len(quantiles)`` = hardest.

    The cut points are the ``1 - q`` quantiles of the similarities, so with tertiles each bucket holds a
    third of the pairs (up to ties).
    """
    sim = np.asarray(similarity, dtype=np.float64)
    if sim.ndim != 1:
        raise ValueError("similarity must be a 1-D array")
    if len(sim) == 0:
        return np.zeros(0, dtype=np.int64)
    cuts = np.quantile(sim, [1 - q for q in quantiles])  # descending cut points
    buckets = np.zeros(len(sim), dtype=np.int64)
    for cut in cuts:
        buckets += sim < cut
    return buckets


class CurriculumSchedule:
    """Which buckets each epoch trains on. ``stages[k]`` lists the bucket names open in epoch ``k + 1``."""

    def __init__(self, buckets: np.ndarray, stages: list[list[str]], num_buckets: int, enabled: bool = True):
        names = bucket_names(num_buckets)
        for stage in stages:
            unknown = set(stage) - set(names)
            if unknown:
                raise ValueError(
                    f"curriculum stage {stage} names unknown bucket(s) {sorted(unknown)}; buckets: {names}"
                )
        self.buckets = np.asarray(buckets)
        self.names = names
        self.stages = [list(s) for s in stages]
        self.enabled = enabled

    def open_buckets(self, epoch: int) -> list[str]:
        """Bucket names used in ``epoch`` (1-based)."""
        if not self.enabled:
            return list(self.names)
        if epoch < 1:
            raise ValueError("epochs are counted from 1")
        return self.stages[min(epoch, len(self.stages)) - 1]

    def active(self, epoch: int) -> np.ndarray:
        """Positions (into the pair list) of the pairs trained in ``epoch``, in increasing order."""
        allowed = [self.names.index(n) for n in self.open_buckets(epoch)]
        return np.flatnonzero(np.isin(self.buckets, allowed))
