"""Run benchmark families and write each one's section into the report as soon as it finishes."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .report import Section, write_section

logger = logging.getLogger(__name__)

FAMILIES = ("generation", "memory", "training", "evaluation")


def _runner(family: str) -> Callable[..., Section]:
    if family == "generation":
        from .generation import run_generation

        return run_generation
    if family == "memory":
        from .memory import run_memory

        return run_memory
    if family == "training":
        from .training import run_training

        return run_training
    if family == "evaluation":
        from .scoring import run_evaluation

        return run_evaluation
    raise ValueError(f"unknown benchmark family {family!r}; choose from {', '.join(FAMILIES)}")


def parse_only(only: str | None) -> list[str]:
    """``"generation,memory"`` -> the families, checked; None or empty -> all of them."""
    if not only:
        return list(FAMILIES)
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise ValueError(
            f"unknown benchmark famil{'ies' if len(unknown) > 1 else 'y'} {', '.join(unknown)}; "
            f"choose from {', '.join(FAMILIES)}"
        )
    return names


def run_suite(
    families: list[str],
    *,
    device: str,
    quick: bool,
    out_dir: str | Path,
    options: dict[str, dict[str, Any]] | None = None,
) -> dict[str, str]:
    """Run ``families`` in order; each finished section is merged into ``<out_dir>/latest.*`` (``quick.*`` when
    ``quick``). A failing family is reported and the others still run. Returns family -> "ok" or the error."""
    stem = "quick" if quick else "latest"
    status: dict[str, str] = {}
    for family in families:
        logger.info("benchmark %s on %s%s", family, device, " (quick, tiny models)" if quick else "")
        try:
            section = _runner(family)(device=device, quick=quick, **(options or {}).get(family, {}))
        except Exception as err:  # noqa: BLE001 - one family failing must not lose the others
            logger.error("benchmark %s failed:\n%s", family, traceback.format_exc())
            status[family] = f"failed: {type(err).__name__}: {err}"
            continue
        json_path, md_path = write_section(out_dir, section, stem)
        status[family] = "ok"
        logger.info("%s written to %s and %s", family, json_path, md_path)
    return status
