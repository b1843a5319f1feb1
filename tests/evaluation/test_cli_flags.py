"""Every numeric flag of the evaluation commands refuses a bad value with a message that names the flag."""

from __future__ import annotations

import importlib

import pytest

BAD = [
    ("i2p", ["run", "--guidance-scale", "nan"], "--guidance-scale"),
    ("i2p", ["run", "--guidance-scale", "-1"], "--guidance-scale"),
    ("i2p", ["run", "--steps", "0"], "--steps"),
    ("i2p", ["run", "--batch-size", "0"], "--batch-size"),
    ("i2p", ["run", "--nudenet-batch-size", "0"], "--nudenet-batch-size"),
    ("i2p", ["run", "--images-per-prompt", "0"], "--images-per-prompt"),
    ("i2p", ["run", "--limit", "-5"], "--limit"),
    ("i2p", ["run", "--height", "4"], "--height"),
    ("i2p", ["run", "--q16-threshold", "2"], "--q16-threshold"),
    ("i2p", ["run", "--grid-prompts", "-1"], "--grid-prompts"),
    ("i2p", ["run", "--emi-samples", "0"], "--emi-samples"),
    ("i2p", ["run", "--bootstrap-seed", "-1"], "--bootstrap-seed"),
    ("i2p", ["report", "x", "--ci-samples", "0"], "--ci-samples"),
    ("i2p", ["rescore", "x", "--q16-threshold", "inf"], "--q16-threshold"),
    ("retrieval", ["--limit", "-5"], "--limit"),
    ("retrieval", ["--k", "-1"], "--k"),
    ("retrieval", ["--batch-size", "0"], "--batch-size"),
    ("retrieval", ["--image-batch-size", "0"], "--image-batch-size"),
    ("retrieval", ["--workers", "-1"], "--workers"),
    ("zeroshot", ["--k", "0"], "--k"),
    ("zeroshot", ["--limit-per-class", "0"], "--limit-per-class"),
    ("zeroshot", ["--batch-size", "x"], "--batch-size"),
    ("utility", ["--steps", "0"], "--steps"),
    ("utility", ["--guidance-scale", "nan"], "--guidance-scale"),
    ("utility", ["--limit", "0"], "--limit"),
    ("utility", ["--batch-size", "0"], "--batch-size"),
    ("utility", ["--fid-batch-size", "0"], "--fid-batch-size"),
    ("utility", ["--width", "100000"], "--width"),
]


@pytest.mark.parametrize(("tool", "argv", "flag"), BAD, ids=[f"{t}:{' '.join(a)}" for t, a, _ in BAD])
def test_bad_numbers_are_refused_with_the_flag_named(tool, argv, flag, capsys):
    parser = importlib.import_module(f"saferclip_diffusers.cli.{tool}").build_parser()
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and "expected" in err


def test_old_spellings_warn_and_do_what_the_new_flags_do():
    parser = importlib.import_module("saferclip_diffusers.cli.i2p").build_parser()
    with pytest.warns(FutureWarning):
        args = parser.parse_args(
            [
                "run",
                "--output-dir",
                "o",
                "--safe",
                "a",
                "--safe",
                "b",
                "--cpu",
                "--guidance",
                "5",
                "--base",
                "sd15",
            ]
        )
    assert (args.out, args.safe_encoder, args.device, args.guidance_scale, args.model) == (
        "o",
        ["a", "b"],
        "cpu",
        5.0,
        "sd15",
    )


def test_help_does_not_import_the_heavy_stack():
    import subprocess
    import sys

    code = (
        "import sys; import saferclip_diffusers.cli.i2p as m; m.build_parser(); "
        "print(sorted(x for x in ('diffusers', 'nudenet', 'pandas', 'matplotlib') if x in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]"


def test_i2p_without_arguments_offline_names_the_model_and_the_alternative(tmp_path, monkeypatch, capsys):
    """The first command a user types, on a machine without the Hub or its cache: a message, no traceback, no files."""
    from saferclip_diffusers.cli.i2p import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))  # nothing cached
    monkeypatch.chdir(tmp_path)
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "CompVis/stable-diffusion-v1-4" in err and "offline" in err and "--preset tiny" in err
    assert "Traceback" not in err
    assert not (tmp_path / "results").exists()  # a failed start writes nothing


def test_q16_that_cannot_be_loaded_says_how_to_get_it_or_opt_out(tmp_path, monkeypatch):
    from saferclip_diffusers.evaluation.runner import load_q16
    from saferclip_diffusers.hub import ModelUnavailableError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    with pytest.raises(ModelUnavailableError) as err:
        load_q16("openai/clip-vit-large-patch14", None, "cpu")
    message = str(err.value)
    assert "openai/clip-vit-large-patch14" in message and "--no-q16" in message and "NudeNet only" in message
    assert "hf download" in message


@pytest.mark.parametrize("tool", ["retrieval", "utility"])
def test_clip_tools_refuse_an_incomplete_training_export(tool, tmp_path, capsys):
    export = tmp_path / "export"
    export.mkdir()
    (export / "train_log.jsonl").write_text("")  # a training run folder whose export never completed
    main = importlib.import_module(f"saferclip_diffusers.cli.{tool}").main
    assert main(["--preset", "tiny", "--safe-encoder", str(export), "--out", str(tmp_path / "out")]) == 2
    assert "incomplete training export" in capsys.readouterr().err
