"""The statistics behind the I2P metrics (see :mod:`.metrics`): a proportion with a bootstrap interval over
groups, a paired bootstrap difference, and the expected maximum (EMI), by bootstrap and in closed form. All
bootstraps are seeded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "ci_low": self.low, "ci_high": self.high}


def _seeded(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def proportion_with_interval(
    positives: Sequence[float],
    totals: Sequence[float],
    samples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """100 * sum(positives) / sum(totals), with a percentile bootstrap interval resampling the groups (prompts)."""
    pos = np.asarray(positives, dtype=np.float64)
    tot = np.asarray(totals, dtype=np.float64)
    if pos.shape != tot.shape or pos.ndim != 1 or len(pos) == 0:
        raise ValueError("positives and totals must be non-empty 1-d sequences of equal length")
    if tot.sum() <= 0:
        raise ValueError("no images to compute a proportion over")
    value = 100.0 * pos.sum() / tot.sum()
    n = len(pos)
    rng = _seeded(seed)
    stats = np.empty(samples)
    chunk = max(1, 2_000_000 // n)
    for start in range(0, samples, chunk):
        m = min(chunk, samples - start)
        idx = rng.integers(0, n, size=(m, n))
        stats[start : start + m] = 100.0 * pos[idx].sum(axis=1) / tot[idx].sum(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return Interval(float(value), float(min(low, value)), float(max(high, value)))


def paired_difference(
    positives_a: Sequence[float],
    positives_b: Sequence[float],
    totals: Sequence[float],
    samples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """100 * (sum(b) - sum(a)) / sum(totals) in percentage points, with a percentile bootstrap interval that
    resamples prompts jointly for both systems (paired: same prompts, same initial latents)."""
    a = np.asarray(positives_a, dtype=np.float64)
    b = np.asarray(positives_b, dtype=np.float64)
    tot = np.asarray(totals, dtype=np.float64)
    if not (a.shape == b.shape == tot.shape) or a.ndim != 1 or len(a) == 0 or tot.sum() <= 0:
        raise ValueError("paired_difference needs three non-empty 1-d sequences of equal length with images")
    value = 100.0 * (b.sum() - a.sum()) / tot.sum()
    n = len(a)
    rng = _seeded(seed)
    stats = np.empty(samples)
    chunk = max(1, 2_000_000 // n)
    for start in range(0, samples, chunk):
        m = min(chunk, samples - start)
        idx = rng.integers(0, n, size=(m, n))
        stats[start : start + m] = 100.0 * (b[idx].sum(axis=1) - a[idx].sum(axis=1)) / tot[idx].sum(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return Interval(float(value), float(min(low, value)), float(max(high, value)))


def _distinct_subsets(rng: np.random.Generator, n: int, k: int, m: int) -> np.ndarray:
    """``m`` uniformly random k-subsets of range(n), as an (m, k) index array."""
    if k * k <= n:  # draw with replacement and redraw rows that repeat an index (exactly uniform, fast)
        idx = rng.integers(0, n, size=(m, k))
        while True:
            s = np.sort(idx, axis=1)
            bad = np.nonzero((s[:, 1:] == s[:, :-1]).any(axis=1))[0]
            if len(bad) == 0:
                return idx
            idx[bad] = rng.integers(0, n, size=(len(bad), k))
    keys = rng.random((m, n))
    return np.argpartition(keys, k - 1, axis=1)[:, :k]


def expected_maximum(
    values: Sequence[float], n_prompts: int = 25, samples: int = 10_000, seed: int = 0
) -> dict[str, Any]:
    """EMI: mean and std of max(values over ``n_prompts`` distinct random prompts), ``samples`` times.

    With fewer than ``n_prompts`` prompts every sample is the whole set (``k`` in the result says so).
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or len(v) == 0:
        raise ValueError("expected_maximum needs a non-empty 1-d sequence of per-prompt values")
    k = min(n_prompts, len(v))
    rng = _seeded(seed)
    maxima = np.empty(samples)
    chunk = max(1, 4_000_000 // max(len(v), k))
    for start in range(0, samples, chunk):
        m = min(chunk, samples - start)
        maxima[start : start + m] = v[_distinct_subsets(rng, len(v), k, m)].max(axis=1)
    return {
        "mean": float(maxima.mean()),
        "std": float(maxima.std()),
        "k": k,
        "samples": samples,
        "seed": seed,
    }


def expected_maximum_exact(values: Sequence[float], n_prompts: int = 25) -> tuple[float, float]:
    """Closed form of EMI: with v sorted ascending, P(max = v_(i)) = C(i-1, k-1) / C(n, k). Returns (mean, std)."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    n = len(v)
    k = min(n_prompts, n)
    log_total = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
    weights = np.zeros(n)
    for i in range(k, n + 1):  # 1-based rank i of the maximum
        log_c = math.lgamma(i) - math.lgamma(k) - math.lgamma(i - k + 1)
        weights[i - 1] = math.exp(log_c - log_total)
    mean = float((weights * v).sum())
    var = float((weights * (v - mean) ** 2).sum())
    return mean, math.sqrt(max(var, 0.0))
