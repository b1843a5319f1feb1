"""The training command line: shared flags, conflicts, and config/model errors as one message (exit code 2)."""

import pytest

from saferclip_diffusers.cli.train import build_parser, main


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    return err


def test_export_only_and_no_export_conflict(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--config", "tiny", "--out", "x", "--export-only", "--no-export"])
    assert exit_.value.code == 2 and "not allowed with argument --export-only" in capsys.readouterr().err


def test_shared_flags_and_deprecated_output_alias(capsys):
    args = build_parser().parse_args(["--config", "tiny", "--output", "runs/x", "--cpu", "optim.lr=1e-3"])
    assert (args.out, args.device, args.overrides) == ("runs/x", "cpu", ["optim.lr=1e-3"])
    assert main(["--config", "tiny", "--device", "cpu", "--print-config"]) == 0
    assert "cpu: true" in capsys.readouterr().out
    assert main(["--list-configs"]) == 0
    assert "sd15-unpaired" in capsys.readouterr().out.split()


@pytest.mark.parametrize(
    "override, message",
    [
        ("encoders.5.model=x", "encoders has 1 item(s) (indices 0..0)"),
        ("optim.batch_size=0", "optim.batch_size must be an integer >= 1, got 0"),
        ("optim.lr=.inf", "finite number"),
    ],
)
def test_config_errors_are_messages(capsys, override, message):
    assert message in _error(capsys, ["--config", "tiny", "--print-config", override])


def test_missing_local_model_and_offline_hub_id(capsys, tmp_path):
    missing = tmp_path / "no" / "clip"
    err = _error(capsys, ["--config", "tiny", "--out", str(tmp_path / "a"), f"encoders.0.model={missing}"])
    assert "encoder model directory does not exist" in err and "Repo id" not in err
    err = _error(
        capsys, ["--config", "tiny", "--out", str(tmp_path / "b"), "encoders.0.model=someone/not-cached-clip"]
    )
    assert "could not load the encoder model 'someone/not-cached-clip'" in err and "--config tiny" in err
    err = _error(
        capsys,
        [
            "--config",
            "sd15",
            "--out",
            str(tmp_path / "c"),
            "encoders.0.model=tiny:clip",
            "optim.mixed_precision=no",
        ],
    )
    assert "data.format='visu' needs data.path" in err and "sd15-unpaired" in err


def test_pickle_only_encoder_hints_at_allow_pickle(capsys, tmp_path):
    import shutil

    import torch
    from safetensors.torch import load_file

    from saferclip_diffusers.tiny import tiny_model_dir

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir("clip"), folder)
    for weights in folder.glob("*.safetensors"):  # the same weights, as a pickle-only checkpoint
        torch.save(load_file(str(weights)), folder / "pytorch_model.bin")
        weights.unlink()
    assert list(folder.glob("*.bin")) and not list(folder.glob("*.safetensors"))
    err = _error(capsys, ["--config", "tiny", "--out", str(tmp_path / "run"), f"encoders.0.model={folder}"])
    assert "allow_pickle=true" in err and "pytorch_model.bin" in err


def test_export_only_without_checkpoint_writes_nothing(capsys, tmp_path):
    out = tmp_path / "empty"
    err = _error(capsys, ["--config", "tiny", "--out", str(out), "--export-only"])
    assert "no checkpoint found" in err and not out.exists()
