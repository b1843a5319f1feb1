"""Bounds on what one demo request may ask for, checked before any work starts.

A public demo page is a shared GPU: each bound keeps one request from taking it over, and each refusal says
what was wrong and what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_SEED = 2**32 - 1


class InputError(ValueError):
    """A request is outside the demo's limits (the message says what is allowed)."""


@dataclass(frozen=True)
class Limits:
    """The allowed range of every user-set generation input."""

    max_prompt_chars: int = 500
    min_steps: int = 1
    max_steps: int = 50
    min_size: int = 256
    max_size: int = 1024
    size_multiple: int = 8
    max_images: int = 4
    max_guidance: float = 20.0

    def __post_init__(self) -> None:
        if not 0 < self.min_size <= self.max_size:
            raise ValueError(f"need 0 < min_size <= max_size, got {self.min_size} and {self.max_size}")
        if self.min_size % self.size_multiple or self.max_size % self.size_multiple:
            raise ValueError(f"min_size and max_size must be multiples of {self.size_multiple}")
        if not 1 <= self.min_steps <= self.max_steps:
            raise ValueError(f"need 1 <= min_steps <= max_steps, got {self.min_steps} and {self.max_steps}")
        if self.max_images < 1 or self.max_prompt_chars < 1 or self.max_guidance < 1:
            raise ValueError("max_images, max_prompt_chars and max_guidance must be at least 1")

    @classmethod
    def for_size(cls, default_size: int, *, max_size: int | None = None, **overrides) -> Limits:
        """Limits around a model's native size: half of it up to twice it (at most 1536 px unless ``max_size``
        says otherwise), in steps of 8 px."""
        multiple = overrides.pop("size_multiple", 8)
        low = max(multiple, default_size // 2 // multiple * multiple)
        high = max_size if max_size is not None else min(default_size * 2, max(default_size, 1536))
        high = max(low, high // multiple * multiple)
        return cls(min_size=low, max_size=high, size_multiple=multiple, **overrides)

    def check(
        self,
        *,
        prompt: str,
        negative_prompt: str = "",
        steps: int,
        guidance_scale: float,
        height: int,
        width: int,
        num_images: int,
        safety_scale: float,
        seed: int,
    ) -> None:
        """Raise :class:`InputError` naming the first input outside its bounds."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError("Enter a prompt: it is empty.")
        for name, text in (("prompt", prompt), ("negative prompt", negative_prompt or "")):
            if len(text) > self.max_prompt_chars:
                raise InputError(
                    f"The {name} has {len(text)} characters; at most {self.max_prompt_chars} are allowed "
                    "(CLIP reads only the first 77 tokens anyway)."
                )
        _in_range("Steps", steps, self.min_steps, self.max_steps, integer=True)
        _in_range("Guidance scale", guidance_scale, 0.0, self.max_guidance)
        for name, value in (("Height", height), ("Width", width)):
            _in_range(name, value, self.min_size, self.max_size, integer=True, unit=" px")
            if int(value) % self.size_multiple:
                raise InputError(f"{name} must be a multiple of {self.size_multiple} px, got {value}.")
        _in_range("Number of images", num_images, 1, self.max_images, integer=True)
        _in_range("Safety strength", safety_scale, 0.0, 1.0)
        _in_range("Seed", seed, 0, MAX_SEED, integer=True)


def _in_range(name: str, value, low, high, *, integer: bool = False, unit: str = "") -> None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{name} must be a number, got {value!r}.")
    if value != value:  # NaN
        raise InputError(f"{name} must be a number, got NaN.")
    if integer and int(value) != value:
        raise InputError(f"{name} must be a whole number, got {value}.")
    if not low <= value <= high:
        raise InputError(f"{name} must lie between {low} and {high}{unit}, got {value}{unit}.")
