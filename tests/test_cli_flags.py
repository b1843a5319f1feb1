"""One command-line vocabulary across every tool (issue 11 §3, issue 14 §3).

Every ``saferclip_diffusers.cli.<tool>.build_parser()`` found with pkgutil (plus ``bench/run.py``) is checked:
a canonical flag of :mod:`saferclip_diffusers.options` that a tool has must have options.py's dest, type and
choices; old spellings are hidden aliases; and every option with a range type refuses an out-of-range and a
non-numeric value with exit code 2 and a message that names the flag.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import pytest

import saferclip_diffusers.cli as cli
from saferclip_diffusers import options
from saferclip_diffusers.options import RangeType

ROOT = Path(__file__).resolve().parents[1]
DEPRECATED_SPELLINGS = ("--safe-text-encoder", "--safe", "--output-dir", "--output", "--cpu", "--guidance")


def _bench_parser() -> argparse.ArgumentParser:
    spec = importlib.util.spec_from_file_location("bench_run_entry", ROOT / "bench" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_parser()


def tool_parsers() -> dict[str, argparse.ArgumentParser]:
    found = {}
    for info in pkgutil.iter_modules(cli.__path__):
        module = importlib.import_module(f"saferclip_diffusers.cli.{info.name}")
        if hasattr(module, "build_parser"):
            found[info.name] = module.build_parser()
    found["bench"] = _bench_parser()
    return found


def reference_specs() -> dict[str, dict]:
    """options.py's definition of every canonical flag, from a parser that calls every adder."""
    p = argparse.ArgumentParser()
    options.add_preset(p, ["x"])
    for adder in (
        options.add_model,
        options.add_safe_encoder,
        options.add_safe_encoder_2,
        options.add_out,
        options.add_device,
        options.add_dtype,
        options.add_generation,
        options.add_limit,
        options.add_allow_pickle,
        options.add_quiet,
    ):
        adder(p)
    return {
        flag: spec
        for action in p._actions
        for flag in action.option_strings
        for spec in [_spec(action)]
        if flag in options.CANONICAL
    }


def _spec(action: argparse.Action) -> dict:
    return {
        "dest": action.dest,
        "type": action.type,
        "choices": list(action.choices) if action.choices else None,
        "class": type(action).__name__,
    }


def parsers_and_subparsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """``(argv prefix, parser)`` for the parser and each sub-command, recursively."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from parsers_and_subparsers(sub, (*path, name))


def parity_problems(parser: argparse.ArgumentParser, reference: dict[str, dict]) -> list[str]:
    problems = []
    for path, sub in parsers_and_subparsers(parser):
        where = " ".join(path) or "(main)"
        for action in sub._actions:
            for flag in action.option_strings:
                if flag in DEPRECATED_SPELLINGS and (
                    action.help != argparse.SUPPRESS or not hasattr(type(action), "new_flag")
                ):
                    problems.append(
                        f"{where}: {flag} is an old spelling; it must be a hidden deprecated alias "
                        "(options.add_alias)"
                    )
                if flag not in reference:
                    continue
                want, got = dict(reference[flag]), _spec(action)
                if flag == "--preset":  # each tool has its own preset names
                    want["choices"] = got["choices"]
                if (
                    flag == "--safe-encoder" and got["class"] == "_AppendAction"
                ):  # add_safe_encoder(multiple=True)
                    want["class"] = got["class"]
                for key in ("dest", "type", "choices", "class"):
                    if want[key] != got[key]:
                        problems.append(
                            f"{where}: {flag} has {key} {got[key]!r}; options.py defines {want[key]!r}"
                        )
        help_text = sub.format_help()
        problems += [
            f"{where}: the help shows the old spelling {old}"
            for old in DEPRECATED_SPELLINGS
            if f"{old} " in help_text or f"{old}," in help_text or help_text.rstrip().endswith(old)
        ]
    return problems


def bad_values(kind: RangeType) -> list[str]:
    """A value just outside the range (when it has a bound) and a non-number."""
    values = ["many"]
    if kind.lo is not None:
        values.append(str(kind.lo if kind.lo_open else (kind.lo - 1 if kind.kind is int else kind.lo - 0.5)))
    elif kind.hi is not None:
        values.append(str(kind.hi if kind.hi_open else (kind.hi + 1 if kind.kind is int else kind.hi + 0.5)))
    if kind.kind is float:
        values.append("nan")
    return values


def range_cases(tools: dict[str, argparse.ArgumentParser]):
    for tool, parser in tools.items():
        for path, sub in parsers_and_subparsers(parser):
            for action in sub._actions:
                if isinstance(action.type, RangeType) and action.option_strings:
                    flag = action.option_strings[0]
                    nargs = action.nargs if isinstance(action.nargs, int) else 1
                    for value in bad_values(action.type):
                        yield pytest.param(
                            tool,
                            [*path, flag, *[value] * nargs],
                            flag,
                            id=f"{tool}{'-' + '-'.join(path) if path else ''}{flag}={value}",
                        )


TOOLS = tool_parsers()
REFERENCE = reference_specs()


def test_every_tool_has_a_parser_and_the_reference_is_complete():
    assert "demo" in TOOLS and "bench" in TOOLS
    assert {"--steps", "--guidance-scale", "--out", "--safe-encoder", "--device", "--dtype"} <= set(REFERENCE)
    assert set(TOOLS) - {"bench"} <= set(cli.TOOLS)  # a new tool module is listed in cli.TOOLS


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_canonical_flags_mean_the_same_in_every_tool(tool):
    assert parity_problems(TOOLS[tool], REFERENCE) == []


def test_the_parity_check_catches_a_hand_written_flag():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int)
    p.add_argument("--output-dir")
    sub = p.add_subparsers().add_parser("run")
    options.add_out(sub)
    sub.add_argument("--device", choices=["cpu", "cuda"])
    problems = parity_problems(p, REFERENCE)
    assert any("--steps has type" in x for x in problems)
    assert any("--output-dir is an old spelling" in x for x in problems)
    assert any(x.startswith("run: --device has choices") for x in problems)
    assert not any(x.startswith("run: --out") for x in problems)


@pytest.mark.parametrize(("tool", "argv", "flag"), list(range_cases(TOOLS)))
def test_bad_numbers_are_refused_naming_the_flag(tool, argv, flag, capsys, recwarn):
    with pytest.raises(SystemExit) as exit_info:
        TOOLS[tool].parse_args(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert f"argument {flag}" in err and "expected " in err, err


def test_bad_values_step_just_outside_each_bound():
    assert bad_values(options.positive_int) == ["many", "0"]
    assert bad_values(options.probability) == ["many", "-0.5", "nan"]
    assert bad_values(options.float_range(0.0, lo_open=True)) == ["many", "0.0", "nan"]
    assert bad_values(options.int_range(hi=5)) == ["many", "6"]
