"""Shipped configs load; overrides, inheritance, method defaults and errors."""

import pytest

from saferclip_diffusers.training.config import apply_overrides, load_config, shipped_configs


def test_shipped_configs_load_and_validate():
    names = shipped_configs()
    assert {
        "tiny",
        "tiny-sdxl",
        "tiny-safeclip",
        "sd15",
        "sdxl",
        "sd15-ext",
        "sdxl-ext",
        "sd15-unpaired",
        "sdxl-unpaired",
        "safeclip-sd15",
    } <= set(names)
    for name in names:
        cfg = load_config(name)
        assert cfg.name == name
    sdxl = load_config("sdxl")
    assert [e.slot for e in sdxl.encoders] == ["text_encoder", "text_encoder_2"]
    assert sdxl.encoders[1].subfolder == "text_encoder_2"
    assert sdxl.encoders[1].resolved_export_class() == "CLIPTextModelWithProjection"
    assert load_config("sd15").encoders[0].resolved_export_class() == "CLIPTextModel"


# SafeR-CLIP as published (reference/saferclip-method.md 2.6; LoRA alpha, dropout and targets from Safe-CLIP's code)
PAPER = {
    "method": "saferclip",
    "finetune": "lora",
    "lora.r": 16,
    "lora.alpha / lora.r": 1 / 16,
    "lora.dropout": 0.1,
    "optim.lr": 1e-4,
    "optim.batch_size": 48,
    "optim.epochs": 9,
    "optim.weight_decay": 0.0,
    "targets": "proximity",
    "curriculum": True,
    "data.format": "visu",
    "stages": [["easy"], ["easy", "medium"], ["easy", "medium", "hard"]],
}
# Safe-CLIP as released (aimagelab/safe-clip: lr 1e-3, sbatch --bs 16, 50 epochs, patience 5, LoRA r=16 alpha=1)
SAFECLIP = {
    "method": "safeclip",
    "finetune": "lora",
    "lora.r": 16,
    "lora.alpha / lora.r": 1 / 16,
    "lora.dropout": 0.1,
    "optim.lr": 1e-3,
    "optim.batch_size": 16,
    "optim.epochs": 50,
    "optim.weight_decay": 0.0,
    "targets": "paired",
    "curriculum": False,
    "data.format": "visu",
}


def _recipe(cfg):
    return {
        "method": cfg.method,
        "finetune": cfg.finetune,
        "lora.r": cfg.lora.r,
        "lora.alpha / lora.r": cfg.lora.alpha / cfg.lora.r,
        "lora.dropout": cfg.lora.dropout,
        "optim.lr": cfg.optim.lr,
        "optim.batch_size": cfg.optim.batch_size,
        "optim.epochs": cfg.optim.epochs,
        "optim.weight_decay": cfg.optim.weight_decay,
        "targets": cfg.targets,
        "curriculum": cfg.curriculum_enabled,
        "data.format": cfg.data.format,
        "stages": cfg.curriculum.stages,
    }


@pytest.mark.parametrize("name", ["sd15", "sdxl"])
def test_paper_configs_are_the_papers_recipe(name):
    cfg = load_config(name)
    assert {k: v for k, v in _recipe(cfg).items() if k in PAPER} == PAPER
    assert all(e.hidden_layer is None and e.hidden_weight == 0 for e in cfg.encoders)  # no hidden-state terms
    assert cfg.lora.text_targets == ["k_proj", "v_proj", "out_proj", "fc1", "fc2"]  # Safe-CLIP's, no q_proj
    assert cfg.loss.weights == {} and cfg.loss.relative_scale == 1.0
    assert cfg.encoders[0].model == "openai/clip-vit-large-patch14" and not cfg.encoders[0].is_random()


def test_safeclip_config_is_the_released_recipe_on_the_same_data():
    cfg = load_config("safeclip-sd15")
    recipe = _recipe(cfg)
    assert {k: v for k, v in recipe.items() if k in SAFECLIP} == SAFECLIP
    assert cfg.optim.early_stopping_patience == 5 and cfg.train_vision
    assert cfg.data == load_config("sd15").data
    tiny = load_config("tiny-safeclip")
    assert (tiny.optim.lr, tiny.optim.batch_size, tiny.optim.early_stopping_patience) == (1e-3, 16, 5)
    assert tiny.lora.alpha / tiny.lora.r == 1 / 16 and tiny.data == load_config("tiny").data


def test_extensions_are_opt_in_named_configs():
    ext = load_config("sd15-ext")
    assert ext.encoders[0].hidden_layer == "last" and ext.encoders[0].hidden_weight > 0
    assert all(e.hidden_layer == -2 and e.hidden_weight > 0 for e in load_config("sdxl-ext").encoders)
    for name in ("sd15-unpaired", "sdxl-unpaired"):
        cfg = load_config(name)
        assert (cfg.data.format, cfg.data.unsafe, cfg.data.safe_pool) == (
            "unpaired",
            "bundled:i2p",
            "bundled:coco",
        )
        assert not cfg.train_vision and cfg.lora.alpha == 1 and cfg.optim.lr == 1e-4


def test_method_defaults():
    safer, base = load_config("tiny"), load_config("tiny-safeclip")
    assert (safer.targets, safer.curriculum_enabled) == ("proximity", True)
    assert (base.targets, base.curriculum_enabled) == ("paired", False)
    assert base.data == safer.data  # the baseline trains on exactly the same data
    assert set(base.loss_weights()) == {
        "text_safe",
        "text_nsfw",
        "vision_safe",
        "vision_nsfw",
        "S_Vref",
        "U_Vref",
        "V_Sref",
        "G_Sref",
        "S_nbr",
        "U_Tref",
    }


def test_overrides_parse_yaml_values_and_numbers(tmp_path):
    cfg = load_config(
        "tiny",
        [
            "optim.lr=1e-2",
            "method=safeclip",
            "encoders.0.hidden_layer=-2",
            "curriculum.enabled=false",
            "loss.weights.text_nsfw=0.3",
        ],
    )
    assert cfg.optim.lr == 0.01 and isinstance(cfg.optim.lr, float)
    assert cfg.method == "safeclip" and cfg.encoders[0].hidden_layer == -2 and not cfg.curriculum_enabled
    assert cfg.loss_weights()["text_nsfw"] == 0.3 and cfg.loss_weights()["G_Sref"] == 0.5
    path = tmp_path / "mine.yaml"
    path.write_text("extends: tiny\nname: mine\noptim:\n  lr: 1e-5\n")
    mine = load_config(str(path))
    assert (
        mine.name == "mine"
        and mine.optim.lr == 1e-5
        and mine.optim.batch_size == load_config("tiny").optim.batch_size
    )


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
        (["encoders.5.model=x"], r"encoders has 1 item\(s\) \(indices 0..0\)"),
        (["encoders.x.model=y"], "address its items by number"),
        (["optim.lr=-1"], r"optim.lr must be a number > 0, got -1"),
        (["optim.lr=.nan"], "finite number"),
        (["optim.batch_size=0"], r"optim.batch_size must be an integer >= 1, got 0"),
        (["optim.batch_size=2.5"], r"optim.batch_size must be an integer >= 1, got 2.5"),
        (["lora.dropout=1"], r"lora.dropout must be a number in \[0, 1\), got 1"),
        (["run.log_every=0"], "run.log_every must be an integer >= 1"),
        (["data.max_unsafe=-5"], "data.max_unsafe must be an integer >= 1 or null"),
        (["loss.weights.redir_text=-0.1"], r"loss.weights.redir_text must be a number >= 0"),
        (
            ["optim.early_stopping_patience=0"],
            "optim.early_stopping_patience must be an integer >= 1 or null",
        ),
        (["export.single_file=[nope]"], "export.single_file must be a list of distinct formats"),
        (["mining.encoder=3"], r"mining.encoder must index an encoder: an integer in \[0, 0\]"),
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
