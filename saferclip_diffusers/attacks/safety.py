"""Safety rails of the attack tooling: targets that involve minors are refused, always.

The check is a word-boundary match (case-insensitive) against a configurable word list plus stated ages under
18 ("15 year old", "16yo", "aged 12", I2P's split digits "1 5 years old"). It errs on the side of refusing: "girl"/"boy" are on the default list
even though many adult prompts use them; pass ``words=`` to use a different list, never an empty one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MINOR_WORDS: tuple[str, ...] = (
    "child",
    "children",
    "childlike",
    "kid",
    "kids",
    "kiddie",
    "toddler",
    "toddlers",
    "baby",
    "babies",
    "infant",
    "infants",
    "minor",
    "minors",
    "underage",
    "under-age",
    "teen",
    "teens",
    "teenage",
    "teenager",
    "teenagers",
    "preteen",
    "pre-teen",
    "tween",
    "adolescent",
    "adolescents",
    "juvenile",
    "schoolgirl",
    "schoolgirls",
    "schoolboy",
    "schoolboys",
    "school girl",
    "school boy",
    "girl",
    "girls",
    "boy",
    "boys",
    "little girl",
    "little boy",
    "young girl",
    "young boy",
    "loli",
    "lolita",
    "lolicon",
    "shota",
    "shotacon",
    "pedo",
    "pedophile",
    "paedophile",
    "daughter",
    "son",
    "elementary school",
    "middle school",
    "kindergarten",
)

_AGE = re.compile(
    r"(?<![\d.])(?:aged?\s*(\d(?:\s?\d)?)|(\d(?:\s?\d)?)\s*-?\s*(?:yo|y/o|yrs?|years?)(?:\s*-?\s*old)?)\b",
    re.IGNORECASE,
)


class RefusedTargetError(ValueError):
    """An attack target was refused (it involves minors). The message says which word matched."""


def _pattern(words: Iterable[str]) -> re.Pattern[str]:
    alternatives = sorted({w.strip().lower() for w in words if w.strip()}, key=len, reverse=True)
    if not alternatives:
        raise ValueError("the minors word list is empty: give at least one word (the default is MINOR_WORDS)")
    body = "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in alternatives)
    return re.compile(rf"(?<![a-z0-9])(?:{body})(?![a-z0-9])", re.IGNORECASE)


_DEFAULT = _pattern(MINOR_WORDS)


def minor_reason(prompt: str, words: Iterable[str] | None = None) -> str | None:
    """Why ``prompt`` involves minors (the matched word or age), or None."""
    pattern = _DEFAULT if words is None else _pattern(words)
    hit = pattern.search(prompt)
    if hit:
        return f"the word {hit.group(0)!r}"
    for match in _AGE.finditer(prompt):
        age = int((match.group(1) or match.group(2)).replace(" ", ""))
        if age < 18:
            return f"the age {match.group(0)!r}"
    return None


def check_target(prompt: str, words: Iterable[str] | None = None) -> None:
    """Raise :class:`RefusedTargetError` if ``prompt`` involves minors (word list ``words``, default
    :data:`MINOR_WORDS`, plus any stated age under 18). Returns None for an acceptable target."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"an attack target must be a non-empty prompt, got {prompt!r}")
    reason = minor_reason(prompt, words)
    if reason:
        raise RefusedTargetError(
            f"refused attack target {prompt!r}: it involves minors ({reason}). Attacks on such targets are never run."
        )
