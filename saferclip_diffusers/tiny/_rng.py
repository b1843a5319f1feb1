"""Builders must leave the caller's random streams exactly as they found them (issue 14 §2)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch

F = TypeVar("F", bound=Callable)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator for the block, then restore the caller's state (nothing consumed)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def rng_neutral(func: F) -> F:
    """Run ``func`` on a forked torch CPU generator, so it neither reads nor advances the caller's stream."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with torch.random.fork_rng(devices=[]):
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
