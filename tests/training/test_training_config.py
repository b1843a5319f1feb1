"""Shipped configs load; overrides, inheritance, method defaults and errors."""

import pytest

from saferclip_diffusers.training.config import apply_overrides, load_config, shipped_configs


def test_shipped_configs_load_and_validate():
    names = shipped_configs()
    assert {"tiny", "tiny-sdxl", "tiny-safeclip", "sd15", "sdxl"} <= set(names)
    for name in names:
        cfg = load_config(name)
        assert cfg.name == name
    sdxl = load_config("sdxl")
    assert [e.slot for e in sdxl.encoders] == ["text_encoder", "text_encoder_2"]
    assert sdxl.encoders[1].subfolder == "text_encoder_2" and sdxl.encoders[1].hidden_layer == -2
    assert sdxl.encoders[1].resolved_export_class() == "CLIPTextModelWithProjection"
    assert load_config("sd15").encoders[0].resolved_export_class() == "CLIPTextModel"


def test_method_defaults():
    safer, base = load_config("tiny"), load_config("tiny-safeclip")
    assert (safer.targets, safer.curriculum_enabled) == ("proximity", True)
    assert (base.targets, base.curriculum_enabled) == ("paired", False)
    assert base.data == safer.data  # the baseline trains on exactly the same data
    assert set(base.loss_weights()) == {"text_safe", "text_nsfw", "vision_safe", "vision_nsfw",
                                        "S_Vref", "U_Vref", "V_Sref", "G_Sref"}


def test_overrides_parse_yaml_values_and_numbers(tmp_path):
    cfg = load_config("tiny", ["optim.lr=1e-2", "method=safeclip", "encoders.0.hidden_layer=-2",
                               "curriculum.enabled=false", "loss.weights.text_nsfw=0.3"])
    assert cfg.optim.lr == 0.01 and isinstance(cfg.optim.lr, float)
    assert cfg.method == "safeclip" and cfg.encoders[0].hidden_layer == -2 and not cfg.curriculum_enabled
    assert cfg.loss_weights()["text_nsfw"] == 0.3 and cfg.loss_weights()["G_Sref"] == 0.5
    path = tmp_path / "mine.yaml"
    path.write_text("extends: tiny\nname: mine\noptim:\n  lr: 1e-5\n")
    mine = load_config(str(path))
    assert mine.name == "mine" and mine.optim.lr == 1e-5 and mine.optim.batch_size == load_config("tiny").optim.batch_size


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["optim.lrr=1"], "unknown config key"),
        (["method=other"], "method must be one of"),
        (["loss.weights.nope=1"], "unknown term"),
        (["optim.lr=fast"], "expected a number"),
        (["encoders.0.slot=unet"], "slot must be one of"),
        (["curriculum.quantiles=[0.7, 0.3]"], "quantiles"),
        (["nokey"], "key.sub=value"),
        (["encoders.0.hidden_layer=null"], "hidden_weight needs hidden_layer"),
    ],
)
def test_bad_config_errors_say_what_is_wrong(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config("tiny", overrides)


def test_unknown_config_name_lists_shipped_ones():
    with pytest.raises(FileNotFoundError, match="tiny"):
        load_config("does-not-exist")


def test_apply_overrides_does_not_mutate():
    data = {"optim": {"lr": 1}}
    out = apply_overrides(data, ["optim.lr=2"])
    assert data["optim"]["lr"] == 1 and out["optim"]["lr"] == 2
