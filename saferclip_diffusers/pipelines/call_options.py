"""The four options every Safer ``__call__`` adds to its parent's, and the checks they get before generating.

``safety_scale`` (0..1), ``return_original``, ``compare_in_one_batch`` and ``negative_prompt_encoder``
("original" or "safe") come after the parent's parameters, keyword only, in every Safer pipeline.
"""

from __future__ import annotations

import inspect
import numbers
import threading
import warnings
from typing import Any

import torch

PROMPT_ARGS = ("prompt", "prompt_2", "prompt_3")
NEGATIVE_ARGS = ("negative_prompt", "negative_prompt_2", "negative_prompt_3")
NEGATIVE_ENCODERS = ("original", "safe")

_P = inspect.Parameter
OUR_CALL_PARAMETERS = (
    _P("safety_scale", _P.KEYWORD_ONLY, default=1.0, annotation="float"),
    _P("return_original", _P.KEYWORD_ONLY, default=False, annotation="bool"),
    _P("compare_in_one_batch", _P.KEYWORD_ONLY, default=True, annotation="bool"),
    _P("negative_prompt_encoder", _P.KEYWORD_ONLY, default="original", annotation="str"),
)
OUR_OPTIONS = tuple(p.name for p in OUR_CALL_PARAMETERS)


def split_call_locals(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """An explicit ``__call__``'s ``locals()`` as (the parent's arguments, our options)."""
    args = {k: v for k, v in values.items() if k not in OUR_OPTIONS and k not in ("self", "__class__")}
    return args, {k: values[k] for k in OUR_OPTIONS}


def check_call(
    pipe: Any,
    kwargs: dict[str, Any],
    *,
    safety_scale: Any,
    return_original: bool,
    negative_prompt_encoder: str,
    negatives_written: bool,
) -> tuple[float, str]:
    """Refuse what a call cannot honour; returns ``safety_scale`` as a float and the encoder that will read a
    written negative prompt (the safe ones, with a warning, when the originals are not loaded)."""
    if (
        isinstance(safety_scale, bool)
        or not isinstance(safety_scale, numbers.Real)
        or not 0.0 <= safety_scale <= 1.0
    ):
        raise ValueError(
            "safety_scale must be a number in [0, 1] (0 = original encoders, 1 = safe encoders), "
            f"got {safety_scale!r}"
        )
    if negative_prompt_encoder not in NEGATIVE_ENCODERS:
        raise ValueError(
            f"negative_prompt_encoder must be 'safe' or 'original', got {negative_prompt_encoder!r}"
        )
    need_original = safety_scale != 1.0 or return_original
    if need_original and not pipe.has_original:
        raise ValueError(
            f"safety_scale={safety_scale} / return_original={return_original} need the original text encoder(s), "
            "which this pipeline did not keep: load it with keep_original=True (or build it with from_pipe)."
        )
    if need_original and kwargs.get("prompt_embeds") is not None:
        raise ValueError("safety_scale < 1 and return_original need the prompt text, not prompt_embeds")
    if (
        negative_prompt_encoder == "original"
        and negatives_written
        and pipe.safe_slots
        and not pipe.has_original
    ):
        warnings.warn(
            "negative_prompt_encoder='original' needs the original text encoder(s), which this pipeline did not "
            "keep: the safe encoders read the negative prompt, which weakens it. Load with keep_original=True, "
            "or pass negative_prompt_encoder='safe' to silence this.",
            UserWarning,
            stacklevel=5,
        )
        negative_prompt_encoder = "safe"
    return float(safety_scale), negative_prompt_encoder


class SaferCallLock:
    """One call at a time per pipeline: a branch swaps encoders in the slots and diffusers keeps scheduler state on
    the pipeline, so concurrent calls from several threads are serialised rather than silently mixed."""

    def _safer_call(self, kwargs: dict[str, Any], **options: Any):
        with self.__dict__.setdefault("_safer_lock", threading.RLock()), torch.no_grad():
            return self._locked_call(kwargs, **options)
