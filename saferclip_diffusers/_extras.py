"""Optional dependencies: a tool that needs an extra says which one to install."""

from __future__ import annotations

import importlib.util


def missing_modules(*modules: str) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def require_extra(extra: str, *modules: str, feature: str) -> None:
    """Raise ImportError naming ``pip install 'saferclip-diffusers[extra]'`` when a module is missing."""
    missing = missing_modules(*modules)
    if missing:
        raise ImportError(
            f"{feature} needs the [{extra}] extra: pip install 'saferclip-diffusers[{extra}]' "
            f"(missing: {', '.join(missing)})"
        )
