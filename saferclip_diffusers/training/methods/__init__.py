"""Registry of training methods: ``get_method(name)`` returns a fresh :class:`~.base.Method` instance.

Entries are ``"module:Class"`` strings imported on first use, so listing the names costs nothing.
"""

from __future__ import annotations

import importlib

from .base import Method

METHODS: dict[str, str] = {
    "saferclip": "saferclip:SaferClip",
    "safeclip": "safeclip:SafeClip",
    "uwm": "uwm_method:UWM",
    "des": "des:DES",
}

__all__ = ["METHODS", "Method", "get_method"]


def get_method(name: str) -> Method:
    """An instance of the method called ``name`` (ValueError listing the known names otherwise)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(sorted(METHODS))}")
    module, cls = METHODS[name].split(":")
    return getattr(importlib.import_module(f".{module}", __name__), cls)()
