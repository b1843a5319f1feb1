"""One-time pickle -> safetensors conversion: the pickle is opened once, knowingly, and the result is verified."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from transformers import CLIPTextModel

from saferclip_diffusers.cli.export import main as export_main
from saferclip_diffusers.encoders import PickleCheckpointError, convert_checkpoint, load_safe_text_encoder

from .conftest import tiny_text_config


def _des(path, seed):
    torch.manual_seed(seed)
    model = CLIPTextModel(tiny_text_config(width=768, layers=1, heads=12)).eval()
    torch.save(
        {
            "model_state_dict": {"text_model." + k: v for k, v in model.state_dict().items()},
            "epoch": 5,
            "using_text_encoder": 1,
        },
        path,
    )
    return model


def test_convert_des_checkpoint_once(tmp_path, ids):
    pt = tmp_path / "des.pt"
    source = _des(pt, 0)
    out = tmp_path / "des-safetensors"
    with pytest.raises(PickleCheckpointError, match="allow_pickle=True"):
        convert_checkpoint(pt, out)
    assert not out.exists()
    assert convert_checkpoint(pt, out, allow_pickle=True) == out
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "config.json",
        "converted_from.json",
        "model.safetensors",
    ]
    note = json.loads((out / "converted_from.json").read_text())
    assert list(note["sha256"].values()) == [hashlib.sha256(pt.read_bytes()).hexdigest()]
    assert note["checkpoint_info"]["epoch"] == 5 and note["checkpoint_info"]["layout"] == "des"
    loaded = load_safe_text_encoder(out)  # no allow_pickle needed any more
    with torch.no_grad():
        assert torch.equal(loaded(ids).last_hidden_state, source(ids).last_hidden_state)
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert convert_checkpoint(pt, out, allow_pickle=True) == out  # same file again: nothing rewritten
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp
    other = tmp_path / "other.pt"
    _des(other, 1)
    with pytest.raises(FileExistsError, match="another checkpoint"):
        convert_checkpoint(other, out, allow_pickle=True)


def test_cli_convert(tmp_path, capsys, ids):
    pt = tmp_path / "sage.pt"
    source = _des(pt, 2)
    out = tmp_path / "sage"
    assert export_main(["convert", str(pt), "--out", str(out), "--allow-pickle"]) == 0
    assert str(out) in capsys.readouterr().out
    with torch.no_grad():
        assert torch.equal(load_safe_text_encoder(out)(ids).last_hidden_state, source(ids).last_hidden_state)
    other = tmp_path / "other.pt"
    _des(other, 3)
    assert export_main(["convert", str(other), "--out", str(out), "--allow-pickle"]) == 2
    assert "another checkpoint" in capsys.readouterr().err


def test_cli_convert_des_bigg_with_the_base_pipeline_folder(tmp_path, tiny_sdxl_dir, ids):
    """des_clipg.pt has no projection: --base SDXL_DIR gives the config and keeps text_encoder_2's projection."""
    from transformers import CLIPTextModelWithProjection

    base = CLIPTextModelWithProjection.from_pretrained(tiny_sdxl_dir / "text_encoder_2").eval()
    torch.manual_seed(9)
    tower = CLIPTextModel(base.config).eval()
    pt = tmp_path / "des_clipg.pt"
    torch.save({"model_state_dict": {"text_model." + k: v for k, v in tower.state_dict().items()}}, pt)
    out = tmp_path / "des-g"
    assert (
        export_main(
            [
                "convert",
                str(pt),
                "--out",
                str(out),
                "--allow-pickle",
                "--slot",
                "text_encoder_2",
                "--base",
                str(tiny_sdxl_dir),
            ]
        )
        == 0
    )
    loaded = load_safe_text_encoder(out, "text_encoder_2")
    with torch.no_grad():
        expected = tower(ids).pooler_output @ base.text_projection.weight.T
        torch.testing.assert_close(loaded(ids).text_embeds, expected, rtol=0, atol=1e-6)
