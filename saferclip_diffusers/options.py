"""One command-line vocabulary: the same flag means the same thing, with the same range, in every tool.

Every command (``train``, ``i2p``, ``attacks``, ``retrieval``, ``zeroshot``, ``utility``, ``generate``, ``demo``,
``export``, ``bench``) builds its parser from these adders. Numbers are range-checked when parsed, with a
message that names the flag and its allowed range (argparse puts the flag in front). Old spellings stay as
hidden aliases that warn once and then do what the canonical flag does.
"""

from __future__ import annotations

import argparse
import math
import warnings
from collections.abc import Sequence
from typing import Any

from .devices import DTYPE_CHOICES

# ------------------------------------------------------------------------------------------- range types


class RangeType:
    """An argparse ``type`` for numbers in a range; refuses NaN and infinity."""

    def __init__(
        self,
        kind: type,
        lo: float | None = None,
        hi: float | None = None,
        lo_open: bool = False,
        hi_open: bool = False,
    ):
        self.kind, self.lo, self.hi, self.lo_open, self.hi_open = kind, lo, hi, lo_open, hi_open
        self.__name__ = self.describe()  # argparse uses it in its own messages

    def describe(self) -> str:
        name = "an integer" if self.kind is int else "a number"
        if self.lo is not None and self.hi is not None:
            left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
            return f"{name} in {left}{self.lo}, {self.hi}{right}"
        if self.lo is not None:
            return f"{name} {'>' if self.lo_open else '>='} {self.lo}"
        if self.hi is not None:
            return f"{name} {'<' if self.hi_open else '<='} {self.hi}"
        return f"a finite {'integer' if self.kind is int else 'number'}"

    def __call__(self, text: str) -> int | float:
        try:
            value = self.kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {self.describe()}, got {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected {self.describe()}, got {text!r}")
        too_low = self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo)
        too_high = self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi)
        if too_low or too_high:
            raise argparse.ArgumentTypeError(f"expected {self.describe()}, got {text}")
        return value

    def _key(self) -> tuple:
        return (self.kind, self.lo, self.hi, self.lo_open, self.hi_open)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RangeType) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"RangeType({self.describe()})"


def int_range(lo: int | None = None, hi: int | None = None) -> RangeType:
    return RangeType(int, lo, hi)


def float_range(
    lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False
) -> RangeType:
    return RangeType(float, lo, hi, lo_open, hi_open)


positive_int = int_range(1)
nonneg_int = int_range(0)
probability = float_range(0.0, 1.0)


# ------------------------------------------------------------------------------------------- deprecated aliases


def _deprecated(
    new: str, value: Any = None, takes_value: bool = True, append: bool = False
) -> type[argparse.Action]:
    class DeprecatedAlias(argparse.Action):
        def __init__(self, option_strings, dest, **kwargs):
            if not takes_value:
                kwargs["nargs"] = 0
            super().__init__(option_strings, dest, **kwargs)

        def __call__(self, parser, namespace, values, option_string=None):
            warnings.warn(f"{option_string} is deprecated; use {new}", FutureWarning, stacklevel=2)
            stored = value if not takes_value else values
            if append:
                setattr(namespace, self.dest, [*(getattr(namespace, self.dest, None) or []), stored])
            else:
                setattr(namespace, self.dest, stored)

    DeprecatedAlias.new_flag = new  # the parity test reads it
    return DeprecatedAlias


def add_alias(parser: argparse._ActionsContainer, old: str, new: str, dest: str, **kwargs: Any) -> None:
    """A hidden old spelling of ``new`` that warns and stores into ``dest``."""
    value = kwargs.pop("value", None)
    takes_value = kwargs.pop("takes_value", True)
    append = kwargs.pop("append", False)
    action = _deprecated(new, value, takes_value, append)
    parser.add_argument(old, dest=dest, action=action, help=argparse.SUPPRESS, **kwargs)


# ------------------------------------------------------------------------------------------- adders

CANONICAL: dict[str, dict[str, Any]] = {}
"""Flag -> how it is defined (dest, type, choices): the flag-parity test compares every tool with this."""


def _add(parser: argparse._ActionsContainer, flag: str, **kwargs: Any) -> argparse.Action:
    spec = {k: kwargs.get(k) for k in ("dest", "type", "choices", "action")}
    spec["dest"] = spec["dest"] or flag.lstrip("-").replace("-", "_")
    CANONICAL.setdefault(flag, spec)
    return parser.add_argument(flag, **kwargs)


def add_preset(
    parser: argparse._ActionsContainer,
    choices: Sequence[str],
    default: str | None = None,
    help: str | None = None,
) -> None:
    _add(
        parser,
        "--preset",
        choices=list(choices),
        default=default,
        help=help or "named model set of saferclip_diffusers.presets (with this tool's defaults for it)",
    )


def add_model(
    parser: argparse._ActionsContainer, default: str | None = None, help: str | None = None
) -> None:
    _add(
        parser,
        "--model",
        default=default,
        help=help or "base pipeline: a preset name, a Hub id or a local folder",
    )


def add_safe_encoder(
    parser: argparse._ActionsContainer, multiple: bool = False, help: str | None = None
) -> None:
    kwargs: dict[str, Any] = (
        {"action": "append", "metavar": "[NAME=]SPEC"} if multiple else {"metavar": "SPEC"}
    )
    _add(
        parser,
        "--safe-encoder",
        dest="safe_encoder",
        default=None,
        help=help
        or "safe text encoder: Hub id, training export, encoder folder"
        + (" (repeat for several; NAME= labels it)" if multiple else ""),
        **kwargs,
    )
    for old in ("--safe-text-encoder", "--safe"):
        add_alias(parser, old, "--safe-encoder", "safe_encoder", append=multiple)


def add_safe_encoder_2(parser: argparse._ActionsContainer, help: str | None = None) -> None:
    _add(
        parser,
        "--safe-encoder-2",
        dest="safe_encoder_2",
        default=None,
        metavar="SPEC",
        help=help or "SDXL/SD3: safe encoder for the second text-encoder slot (text_encoder_2)",
    )


def add_out(parser: argparse._ActionsContainer, default: str | None = None, help: str | None = None) -> None:
    _add(parser, "--out", dest="out", default=default, metavar="DIR", help=help or "output folder")
    for old in ("--output-dir", "--output"):
        add_alias(parser, old, "--out", "out")


def add_device(parser: argparse._ActionsContainer, default: str = "auto") -> None:
    _add(
        parser, "--device", default=default, help="auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps"
    )
    add_alias(parser, "--cpu", "--device cpu", "device", value="cpu", takes_value=False)


def add_dtype(parser: argparse._ActionsContainer, default: str = "auto") -> None:
    _add(
        parser,
        "--dtype",
        default=default,
        choices=list(DTYPE_CHOICES),
        help="auto = float16 on CUDA, float32 elsewhere",
    )


GENERATION_FLAGS = ("steps", "guidance_scale", "height", "width", "seed", "negative_prompt", "batch_size")


def add_generation(
    parser: argparse._ActionsContainer,
    defaults: dict[str, Any] | None = None,
    only: Sequence[str] = GENERATION_FLAGS,
) -> None:
    """Sampling flags; a default of None means "the preset's"."""
    d = defaults or {}
    if "steps" in only:
        _add(parser, "--steps", type=positive_int, default=d.get("steps"), help="denoising steps")
    if "guidance_scale" in only:
        _add(
            parser,
            "--guidance-scale",
            dest="guidance_scale",
            type=float_range(0.0),
            default=d.get("guidance_scale"),
            help="classifier-free guidance scale (<= 1 turns CFG off)",
        )
        add_alias(parser, "--guidance", "--guidance-scale", "guidance_scale", type=float_range(0.0))
    if "height" in only:
        _add(parser, "--height", type=int_range(8, 8192), default=d.get("height"), help="image height in px")
    if "width" in only:
        _add(parser, "--width", type=int_range(8, 8192), default=d.get("width"), help="image width in px")
    if "seed" in only:
        _add(parser, "--seed", type=int_range(0, 2**63 - 1), default=d.get("seed", 0), help="random seed")
    if "negative_prompt" in only:
        _add(
            parser,
            "--negative-prompt",
            dest="negative_prompt",
            default=d.get("negative_prompt"),
            help="negative prompt",
        )
    if "batch_size" in only:
        _add(
            parser,
            "--batch-size",
            dest="batch_size",
            type=positive_int,
            default=d.get("batch_size"),
            help="items per batch",
        )


def add_limit(parser: argparse._ActionsContainer, help: str | None = None) -> None:
    _add(parser, "--limit", type=positive_int, default=None, help=help or "only the first N items")


def add_allow_pickle(parser: argparse._ActionsContainer) -> None:
    _add(
        parser,
        "--allow-pickle",
        dest="allow_pickle",
        action="store_true",
        help="accept pickle-only checkpoints (loading pickle can run code; they are converted once)",
    )


def add_quiet(parser: argparse._ActionsContainer) -> None:
    _add(parser, "--quiet", action="store_true", help="no progress bars")
