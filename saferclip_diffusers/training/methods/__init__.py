"""Registry of training methods: ``METHODS[name]`` is a :class:`~.base.Method` subclass."""

from __future__ import annotations

from pathlib import Path

from .base import Method
from .des import DES
from .uwm_method import UWM

METHODS: dict[str, type[Method]] = {"uwm": UWM, "des": DES}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; registered: {sorted(METHODS)}")
    return METHODS[name]()


def run_training_free(cfg, output_dir) -> Path | None:
    """Run ``cfg.method`` if it is training-free (UWM) and return its export folder; None for trained methods."""
    method = METHODS.get(cfg.method)
    if method is None or not method.training_free:
        return None
    return method().run(cfg, Path(output_dir))


__all__ = ["METHODS", "Method", "get_method", "run_training_free"]
