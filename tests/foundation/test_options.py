import argparse

import pytest

from saferclip_diffusers import options


def parser():
    p = argparse.ArgumentParser(prog="tool")
    options.add_out(p)
    options.add_device(p)
    options.add_generation(p)
    options.add_safe_encoder(p, multiple=True)
    options.add_limit(p)
    return p


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--steps", "0"], "--steps"),
        (["--steps", "x"], "--steps"),
        (["--guidance-scale", "nan"], "--guidance-scale"),
        (["--guidance-scale", "-1"], "--guidance-scale"),
        (["--limit", "-5"], "--limit"),
        (["--batch-size", "0"], "--batch-size"),
        (["--height", "inf"], "--height"),
    ],
)
def test_bad_numbers_name_the_flag(argv, flag, capsys):
    with pytest.raises(SystemExit) as info:
        parser().parse_args(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and "expected" in err


def test_deprecated_aliases_warn_and_map():
    with pytest.warns(FutureWarning, match="--output-dir is deprecated; use --out"):
        a = parser().parse_args(["--output-dir", "x"])
    assert a.out == "x"
    with pytest.warns(FutureWarning):
        a = parser().parse_args(["--cpu", "--guidance", "3", "--safe", "a", "--safe-encoder", "b"])
    assert (a.device, a.guidance_scale, a.safe_encoder) == ("cpu", 3.0, ["a", "b"])


def test_aliases_hidden_from_help():
    text = parser().format_help()
    assert (
        "--out" in text and "--output-dir" not in text and "--cpu" not in text and "--guidance " not in text
    )


def test_range_type_bounds():
    t = options.float_range(0, 1, hi_open=True)
    assert t("0") == 0.0
    with pytest.raises(argparse.ArgumentTypeError, match=r"\[0, 1\)"):
        t("1")
