"""I2P prompts: loading (both column schemas), filters and exclusion of a safe encoder's training prompts.

The bundled CSV is the original I2P release (``sd_seed`` / ``sd_guidance_scale``). Copies in ESD, UnlearnDiff,
P4D and SAFREE rename these to ``evaluation_seed`` / ``evaluation_guidance`` and add ``case_number`` (the row
index in the original file); both are read. Seeds exceed 2**31 and are kept as Python ints. The literal prompt
"Null" stays a prompt (the CSV is read with ``keep_default_na=False``).

Every loaded table has the columns of :data:`COLUMNS`; ``prompt_id`` is the row index in the original I2P
CSV (``case_number`` where the file has it), so results on a subset line up with the full benchmark.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..data import I2P_CSV, I2P_NUDITY_142_CSV

logger = logging.getLogger(__name__)

I2P_CATEGORIES = ("hate", "harassment", "violence", "self-harm", "sexual", "shocking", "illegal activity")
SUBSETS = {"nudity-142": I2P_NUDITY_142_CSV}
SEED_COLUMNS = ("sd_seed", "evaluation_seed")
GUIDANCE_COLUMNS = ("sd_guidance_scale", "evaluation_guidance")
REFERENCE_COLUMNS = ("inappropriate_percentage", "nudity_percentage", "q16_percentage")
COLUMNS = ("prompt_id", "prompt", "categories", "hard", "seed", "guidance", *REFERENCE_COLUMNS)


@dataclass(frozen=True)
class PromptSelection:
    """Which prompts to evaluate: a source file or named subset, then filters, applied in this order."""

    source: str | None = None  # a CSV path (either schema); None = the bundled I2P CSV
    subset: str | None = None  # "nudity-142" (UnlearnDiff's nudity subset of I2P)
    categories: tuple[str, ...] = ()  # keep prompts carrying any of these labels (exact match)
    hard: bool | None = None  # True: hard only; False: not hard; None: both
    limit: int | None = None  # the first N prompts after the other filters

    def describe(self) -> str:
        parts = [self.subset or (Path(self.source).name if self.source else "I2P (bundled CSV)")]
        if self.categories:
            parts.append("categories=" + "|".join(self.categories))
        if self.hard is not None:
            parts.append("hard" if self.hard else "not hard")
        if self.limit is not None:
            parts.append(f"limit={self.limit}")
        return ", ".join(parts)


def _first_present(columns: Iterable[str], candidates: Sequence[str]) -> str | None:
    cols = set(columns)
    return next((c for c in candidates if c in cols), None)


def read_prompt_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Read an I2P-style CSV in either schema into the normalised columns of :data:`COLUMNS`.

    Required: ``prompt`` and a seed column (``sd_seed`` or ``evaluation_seed``). Optional: ``categories``
    (comma separated), ``hard``, a guidance column, ``case_number`` and the SD 1.4 reference percentages.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file not found: {path}")
    try:
        raw = pd.read_csv(path, keep_default_na=False, dtype=str)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ValueError(f"could not read {path} as CSV: {err}") from err
    if "prompt" not in raw.columns:
        raise ValueError(
            f"{path} has no 'prompt' column (columns: {', '.join(raw.columns)}); an I2P-style CSV is expected"
        )
    seed_col = _first_present(raw.columns, SEED_COLUMNS)
    if seed_col is None:
        raise ValueError(
            f"{path} has no seed column: add one named {' or '.join(SEED_COLUMNS)} (one integer per prompt)"
        )
    out = pd.DataFrame(index=range(len(raw)))
    if "case_number" in raw.columns:
        out["prompt_id"] = _int_column(raw["case_number"], path, "case_number")
    else:
        out["prompt_id"] = list(range(len(raw)))
    if len(set(out["prompt_id"])) != len(out):
        raise ValueError(f"{path}: prompt ids (case_number) are not unique")
    out["prompt"] = raw["prompt"].astype(str).tolist()
    if "categories" in raw.columns:
        out["categories"] = [split_categories(c) for c in raw["categories"]]
    else:
        out["categories"] = [()] * len(raw)
    out["hard"] = _int_column(raw["hard"], path, "hard") if "hard" in raw.columns else [0] * len(raw)
    out["seed"] = _int_column(raw[seed_col], path, seed_col)
    guidance_col = _first_present(raw.columns, GUIDANCE_COLUMNS)
    out["guidance"] = (
        _float_column(raw[guidance_col], path, guidance_col) if guidance_col else [float("nan")] * len(raw)
    )
    for col in REFERENCE_COLUMNS:
        out[col] = _float_column(raw[col], path, col) if col in raw.columns else [float("nan")] * len(raw)
    out["seed"] = out["seed"].astype(object)  # Python ints: seeds exceed int32 and must not become floats
    out["prompt_id"] = out["prompt_id"].astype(object)
    return out


def _int_column(values: pd.Series, path: Path, name: str) -> list[int]:
    result = []
    for row, value in enumerate(values):
        text = str(value).strip()
        try:
            number = float(text) if re.fullmatch(r"[+-]?\d+\.0*", text) else None
            result.append(int(number) if number is not None else int(text))
        except ValueError:
            raise ValueError(f"{path}: column {name!r}, row {row}: {value!r} is not an integer") from None
    return result


def _float_column(values: pd.Series, path: Path, name: str) -> list[float]:
    result = []
    for row, value in enumerate(values):
        text = str(value).strip()
        if text == "":
            result.append(float("nan"))
            continue
        try:
            result.append(float(text))
        except ValueError:
            raise ValueError(f"{path}: column {name!r}, row {row}: {value!r} is not a number") from None
    return result


def split_categories(text: str) -> tuple[str, ...]:
    """``"sexual, violence"`` -> ``("sexual", "violence")`` (labels are separated by commas)."""
    return tuple(part.strip() for part in str(text).split(",") if part.strip())


def load_prompts(selection: PromptSelection | None = None) -> pd.DataFrame:
    """Load and filter prompts as described by ``selection`` (defaults: the whole bundled I2P CSV)."""
    selection = selection or PromptSelection()
    if selection.source and selection.subset:
        raise ValueError("give either a prompt file or a named subset, not both")
    if selection.subset:
        if selection.subset not in SUBSETS:
            raise ValueError(f"unknown subset {selection.subset!r}; choose one of {', '.join(SUBSETS)}")
        df = read_prompt_csv(SUBSETS[selection.subset])
    else:
        df = read_prompt_csv(selection.source or I2P_CSV)
    if selection.categories:
        known = sorted({c for cats in df["categories"] for c in cats})
        unknown = [c for c in selection.categories if c not in known]
        if unknown:
            raise ValueError(
                f"unknown categor{'y' if len(unknown) == 1 else 'ies'} {', '.join(map(repr, unknown))}; "
                f"labels in this prompt set: {', '.join(known) or '(none)'}"
            )
        wanted = set(selection.categories)
        df = df[[bool(wanted.intersection(cats)) for cats in df["categories"]]]
    if selection.hard is not None:
        df = df[df["hard"] == int(selection.hard)]
    if selection.limit is not None:
        if selection.limit < 1:
            raise ValueError(f"limit must be at least 1, got {selection.limit}")
        df = df.head(selection.limit)
    if df.empty:
        raise ValueError(f"no prompts left after the filters ({selection.describe()})")
    return df.reset_index(drop=True)


def normalise_prompt(text: str) -> str:
    """Case- and whitespace-insensitive form used to match evaluation prompts against training prompts."""
    return " ".join(str(text).split()).casefold()


def flatten_training_prompts(recorded) -> list[str]:
    """The prompts of a training export's record: a list, or a dict of lists (``{"unsafe": [...], ...}``)."""
    if recorded is None:
        return []
    if isinstance(recorded, str):
        return [recorded]
    if isinstance(recorded, dict):
        return [p for value in recorded.values() for p in flatten_training_prompts(value)]
    return [str(p) for p in recorded]


def exclude_prompts(
    df: pd.DataFrame, prompts: Iterable[str], source: str = "training data"
) -> tuple[pd.DataFrame, int]:
    """Drop rows whose prompt (normalised) is in ``prompts``; warn with the count. Returns (kept, n_excluded)."""
    banned = {normalise_prompt(p) for p in prompts}
    if not banned:
        return df, 0
    mask = [normalise_prompt(p) in banned for p in df["prompt"]]
    n = int(sum(mask))
    if n:
        logger.warning(
            "excluded %d evaluation prompt%s that %s was trained on", n, "" if n == 1 else "s", source
        )
    kept = df[[not m for m in mask]].reset_index(drop=True)
    if kept.empty:
        raise ValueError(
            f"every selected prompt is among the prompts {source} was trained on; nothing left to evaluate"
        )
    return kept, n


def exclude_training_prompts(
    df: pd.DataFrame, encoder_specs: Iterable[str]
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Exclude prompts recorded in the training exports of ``encoder_specs`` (see ``encoders.read_training_prompts``)."""
    from ..encoders import read_training_prompts

    counts: dict[str, int] = {}
    for spec in encoder_specs:
        recorded = flatten_training_prompts(read_training_prompts(spec))
        df, counts[str(spec)] = exclude_prompts(df, recorded, source=f"safe encoder {spec}")
    return df, counts
