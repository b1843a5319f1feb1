"""Registry of training methods: ``METHODS[name]`` is a :class:`~.base.Method` subclass."""

from __future__ import annotations

from .base import Method
from .des import DES
from .uwm_method import UWM

METHODS: dict[str, type[Method]] = {"uwm": UWM, "des": DES}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; registered: {sorted(METHODS)}")
    return METHODS[name]()


__all__ = ["METHODS", "Method", "get_method"]
