"""Alternating measurement: every system is timed once per round, round after round, and compared per round.

Timing each system in its own block lets drift (thermal state, other processes, caches) land on one system
only. Here round r runs every system once, in an order that rotates from round to round, and the ratio of a
system to the baseline is taken *within* each round before the median is taken over rounds. Both wall-clock
and process CPU time are recorded (CPU time is less sensitive to other processes on a shared machine).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm


@dataclass
class Sample:
    """One timed call: wall-clock and process CPU seconds, plus whatever the call returned about itself."""

    wall: float
    cpu: float
    extra: dict[str, Any] = field(default_factory=dict)


class Clock:
    """Wall-clock and process CPU time; ``sync`` runs before each reading (e.g. ``torch.cuda.synchronize``)."""

    def __init__(self, sync: Callable[[], None] | None = None):
        self.sync = sync

    def now(self) -> tuple[float, float]:
        if self.sync is not None:
            self.sync()
        return time.perf_counter(), time.process_time()


def measure(fn: Callable[[], dict | None], clock: Clock | None = None) -> Sample:
    """Time one call of ``fn``; a dict it returns is kept as ``Sample.extra``."""
    clock = clock or Clock()
    w0, c0 = clock.now()
    extra = fn()
    w1, c1 = clock.now()
    return Sample(wall=w1 - w0, cpu=c1 - c0, extra=dict(extra or {}))


def round_order(names: list[str], round_index: int) -> list[str]:
    """The order of round ``round_index``: the list rotated by the round number (each system leads in turn)."""
    k = round_index % len(names)
    return names[k:] + names[:k]


def alternate(
    systems: dict[str, Callable[[], dict | None]],
    repeats: int,
    warmup: int = 1,
    clock: Clock | None = None,
    desc: str = "rounds",
) -> dict[str, list[Sample]]:
    """Run ``warmup`` untimed rounds, then ``repeats`` timed rounds of every system in rotating order.

    Returns, per system, one :class:`Sample` per timed round (index r = round r for every system).
    """
    if not systems:
        raise ValueError("no systems to measure")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    names = list(systems)
    for w in range(warmup):
        for name in round_order(names, w):
            systems[name]()
    samples: dict[str, list[Sample]] = {name: [] for name in names}
    for r in tqdm(range(repeats), desc=desc, leave=False):
        for name in round_order(names, r):
            samples[name].append(measure(systems[name], clock))
    return samples


def spread(values: list[float]) -> dict[str, float]:
    """Median, quartiles, min and max of ``values`` (quartiles by the inclusive method; n=1 gives the value)."""
    if not values:
        raise ValueError("no values")
    values = sorted(values)
    if len(values) == 1:
        q1 = q3 = values[0]
    else:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return {
        "median": statistics.median(values),
        "q1": q1,
        "q3": q3,
        "min": values[0],
        "max": values[-1],
        "n": len(values),
    }


def paired_ratios(
    samples: dict[str, list[Sample]],
    baseline: str,
    value: Callable[[Sample], float] = lambda s: s.wall,
    per_call: dict[str, float] | None = None,
) -> dict[str, dict[str, float]]:
    """Per round, ``value(system) / value(baseline)`` (divided by ``per_call[system]`` if given); its spread.

    ``per_call`` turns per-call times into per-image times for systems that make several images per call.
    """
    if baseline not in samples:
        raise KeyError(f"baseline {baseline!r} was not measured (measured: {', '.join(samples)})")
    base = samples[baseline]
    out = {}
    for name, runs in samples.items():
        if len(runs) != len(base):
            raise ValueError(f"{name} has {len(runs)} rounds, the baseline {len(base)}: rounds must pair up")
        div = (per_call or {}).get(name, 1.0)
        out[name] = spread([value(s) / div / value(b) for s, b in zip(runs, base, strict=True)])
    return out


def paired_differences(
    samples: dict[str, list[Sample]],
    baseline: str,
    value: Callable[[Sample], float] = lambda s: s.wall,
) -> dict[str, dict[str, float]]:
    """Per round, ``value(system) - value(baseline)``; its spread (for parts too small for a stable ratio)."""
    if baseline not in samples:
        raise KeyError(f"baseline {baseline!r} was not measured (measured: {', '.join(samples)})")
    base = samples[baseline]
    return {
        name: spread([value(s) - value(b) for s, b in zip(runs, base, strict=True)])
        for name, runs in samples.items()
    }


def ratio_of_minima(
    samples: dict[str, list[Sample]],
    baseline: str,
    value: Callable[[Sample], float] = lambda s: s.wall,
    per_call: dict[str, float] | None = None,
) -> dict[str, float]:
    """min over rounds of the system / min over rounds of the baseline: the least disturbed runs compared.

    Interference from other processes only ever adds time, so the fastest run is the closest to the intrinsic cost.
    """
    best = min(value(s) for s in samples[baseline])
    return {
        name: min(value(s) for s in runs) / (per_call or {}).get(name, 1.0) / best
        for name, runs in samples.items()
    }


def step_profile(
    total: float, stamps: list[float], start: float, iterations: int | None = None
) -> dict[str, float] | None:
    """Split one generation into a fixed part and a per-denoising-step part from step-end timestamps.

    ``stamps`` are the ``perf_counter`` readings at the end of consecutive denoising steps, ``start`` the reading
    at the call's start, ``total`` its duration, ``iterations`` the number of denoising iterations the call ran
    (default: one per stamp; some pipelines skip the callback on warm-up iterations).
    per_step = (last - first) / (k - 1); fixed = total - iterations * per_step (text encoding, set-up, VAE
    decoding). Needs k >= 2 stamps; else None.
    """
    k = len(stamps)
    if k < 2:
        return None
    iterations = iterations or k
    per_step = (stamps[-1] - stamps[0]) / (k - 1)
    return {
        "per_step": per_step,
        "fixed": total - iterations * per_step,
        "steps": iterations,
        "start_offset": stamps[0] - start,
    }


def project(profile: dict[str, float], steps: int) -> float:
    """Projected duration of the same call with ``steps`` denoising steps: fixed + steps * per_step."""
    return profile["fixed"] + steps * profile["per_step"]
