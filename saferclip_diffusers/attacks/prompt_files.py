"""Readers for published attack-prompt files, recognised by their columns (files are given by path; none of the
licence-restricted sets is bundled).

| columns (header signature) | source | prompt / target / seed / guidance |
|---|---|---|
| ``target_prompt, adv_prompt, sanitized_adv_prompt, clean_prompt, ...`` | ``mma`` (MMA-Diffusion release) | adv_prompt / target_prompt |
| ``adversarial_prompt`` (+ ``target_prompt``) | ``eval-unlearn`` (precomputed) | adversarial_prompt / target_prompt |
| ``original_text, perturbed_text, result_type, ...`` | ``sneakyprompt`` (its output) | perturbed_text / original_text |
| ``sensitive prompt, normal prompt`` | ``ring-a-bell-pairs`` (SAFREE/TRCE natural sentence pairs) | sensitive prompt |
| ``prompt, evaluation_seed, evaluation_guidance, safe_model, safe_level`` | ``p4d`` | prompt, seed, guidance |
| ``prompt, categories, evaluation_seed, evaluation_guidance`` (I2P + ESD columns) | ``unlearndiff`` | prompt, seed, guidance, category |
| ``prompt, categories, sd_seed, sd_guidance_scale`` (I2P schema) | ``i2p`` | prompt, seed, guidance, category |
| ``prompt, case_number, evaluation_seed`` | ``ring-a-bell`` (released GA prompts) | prompt, seed |
| a single ``prompt`` column (DES copies) | ``prompts`` | prompt |
| ``.txt``: one prompt per line | ``lines`` | prompt |

Text is kept exactly as written (only the line end is dropped; the literal prompt "Null" stays a prompt), and
the remaining columns go into ``meta``. An unrecognised header is an error that lists the layouts above.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class AttackPrompt:
    prompt: str
    target: str | None
    seed: int | None
    guidance: float | None
    category: str | None
    source: str
    meta: dict[str, Any] = field(default_factory=dict)


def _int(value: str | None, where: str) -> int | None:
    if value is None or not str(value).strip():
        return None
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{where}: seed {value!r} is not a number") from None
    if number != int(number):
        raise ValueError(f"{where}: seed {value!r} is not an integer")
    return int(number)


def _float(value: str | None, where: str) -> float | None:
    if value is None or not str(value).strip():
        return None
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{where}: guidance {value!r} is not a number") from None


def _category(value: str | None) -> str | None:
    return value.split(",")[0].strip() or None if value else None


# (source, required columns, forbidden columns, prompt col, target col, seed col, guidance col, category col)
LAYOUTS: list[tuple[str, set[str], set[str], str, str | None, str | None, str | None, str | None]] = [
    (
        "mma",
        {"target_prompt", "adv_prompt", "sanitized_adv_prompt"},
        set(),
        "adv_prompt",
        "target_prompt",
        None,
        None,
        None,
    ),
    (
        "eval-unlearn",
        {"adversarial_prompt"},
        set(),
        "adversarial_prompt",
        "target_prompt",
        "seed",
        None,
        None,
    ),
    (
        "sneakyprompt",
        {"original_text", "perturbed_text"},
        set(),
        "perturbed_text",
        "original_text",
        None,
        None,
        None,
    ),
    (
        "ring-a-bell-pairs",
        {"sensitive prompt", "normal prompt"},
        set(),
        "sensitive prompt",
        None,
        None,
        None,
        None,
    ),
    (
        "p4d",
        {"prompt", "evaluation_seed", "evaluation_guidance", "safe_model"},
        set(),
        "prompt",
        None,
        "evaluation_seed",
        "evaluation_guidance",
        "categories",
    ),
    (
        "unlearndiff",
        {"prompt", "categories", "evaluation_seed", "evaluation_guidance"},
        set(),
        "prompt",
        None,
        "evaluation_seed",
        "evaluation_guidance",
        "categories",
    ),
    (
        "i2p",
        {"prompt", "categories", "sd_seed"},
        set(),
        "prompt",
        None,
        "sd_seed",
        "sd_guidance_scale",
        "categories",
    ),
    (
        "ring-a-bell",
        {"prompt", "case_number", "evaluation_seed"},
        {"categories"},
        "prompt",
        None,
        "evaluation_seed",
        "evaluation_guidance",
        None,
    ),
    ("prompts", {"prompt"}, set(), "prompt", None, None, None, None),
]


def detect_layout(columns: list[str]) -> tuple:
    cols = set(columns)
    for layout in LAYOUTS:
        if layout[1] <= cols and not layout[2] & cols:
            return layout
    known = "; ".join(f"{name}: {', '.join(sorted(req))}" for name, req, *_ in LAYOUTS)
    raise ValueError(
        f"unrecognised attack-prompt columns {columns}; known layouts ({known}), or a .txt file with "
        "one prompt per line"
    )


def read_attack_prompts(path: str | Path) -> list[AttackPrompt]:
    """All rows of an attack-prompt file (CSV recognised by its columns, or ``.txt`` one prompt per line)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"attack-prompt file does not exist: {path}")
    if path.suffix.lower() == ".txt":
        lines = path.read_text(encoding="utf-8").splitlines()
        rows = [
            AttackPrompt(line, None, None, None, None, "lines", {"row": i})
            for i, line in enumerate(lines)
            if line.strip()
        ]
    else:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames:
                raise ValueError(f"{path}: empty file (no header row)")
            source, _, _, p_col, t_col, s_col, g_col, c_col = detect_layout(list(reader.fieldnames))
            used = {p_col, t_col, s_col, g_col, c_col}
            rows = []
            for i, r in enumerate(reader):
                where = f"{path} row {i + 2}"
                prompt = r.get(p_col)
                if prompt is None or not prompt.strip():
                    continue
                rows.append(
                    AttackPrompt(
                        prompt=prompt.rstrip("\r\n"),
                        target=(r.get(t_col) or None) if t_col else None,
                        seed=_int(r.get(s_col), where) if s_col else None,
                        guidance=_float(r.get(g_col), where) if g_col else None,
                        category=_category(r.get(c_col)) if c_col else None,
                        source=source,
                        meta={"row": i, **{k: v for k, v in r.items() if k not in used and k is not None}},
                    )
                )
    if not rows:
        raise ValueError(f"{path}: no prompts found")
    return rows
