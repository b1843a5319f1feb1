"""The generation benchmark's logic on the tiny models: systems, profiles, ratios, report section."""

from __future__ import annotations

import statistics
from dataclasses import replace

import pytest

from bench import generation as g
from bench import generation_report as report
from bench import generation_systems as systems_mod


@pytest.fixture(scope="module")
def tiny_run():
    cfg = replace(g.default_config("sd15", quick=True), repeats=2)
    systems, plain = systems_mod.load_systems(cfg)
    return cfg, systems, plain, g.measure_generation(cfg, systems, plain)


def test_default_configs_per_device(monkeypatch):
    from bench import environment

    cpu, cuda, quick = (
        g.default_config("sd15"),
        g.default_config("sd15", "cuda"),
        g.default_config("sdxl", quick=True),
    )
    assert cpu.steps < 50 and cpu.project_steps == 50
    assert cpu.dtype == ("bfloat16" if environment.cpu_supports_bf16() else "float32")
    monkeypatch.setattr(environment, "cpu_supports_bf16", lambda: False)
    assert g.default_config("sd15").dtype == "float32"
    assert (cuda.height, cuda.steps, cuda.dtype) == (512, 50, "float16")
    assert g.default_config("sdxl", "cuda").height == 1024
    assert quick.model == "tiny-sdxl" and quick.sdxl and quick.guidance_scale == 5.0


def test_systems_share_one_unet_and_cover_the_alternatives(tiny_run):
    cfg, systems, plain, _ = tiny_run
    assert set(systems) == {
        "plain",
        "safer",
        "safer+score",
        "compare",
        "sld-medium",
        "sld-strong",
        "negative",
    }
    assert all(s.pipe.unet is plain.unet and s.pipe.vae is plain.vae for s in systems.values())
    assert systems["compare"].images_per_call == 2
    assert all(s.images_per_call == 1 for n, s in systems.items() if n != "compare")


def test_each_system_records_its_steps_and_measurement_pairs_rounds(tiny_run):
    cfg, systems, plain, measured = tiny_run
    res = measured["results"]["sdpa"]
    iterations = len(plain.scheduler.timesteps)  # every denoising iteration is seen through the callbacks
    assert iterations >= cfg.steps
    for name in systems:
        runs = res["raw"][name]
        assert len(runs) == cfg.repeats
        assert all(r["steps"] == iterations for r in runs)
    # ratios are taken per round (system / plain of the same round), then the median: not a ratio of medians
    walls = {name: [r["wall"] for r in runs] for name, runs in res["raw"].items()}
    per_round = [c / p for c, p in zip(walls["compare"], walls["plain"], strict=True)]
    compare = res["wall_per_call"]["compare"]["median"]
    assert compare == pytest.approx(statistics.median(per_round))
    assert res["wall_per_image"]["compare"]["median"] == pytest.approx(compare / 2)
    assert "projected_per_call" in res  # 2 steps measured, 50 projected
    duel = res["head_to_head"]
    assert set(duel["raw"]) == {"plain", "safer"} and len(duel["raw"]["safer"]) == cfg.head_to_head


def test_section_has_one_table_and_one_target_per_model(tiny_run):
    _, _, _, measured = tiny_run
    section = report.to_section([measured], "cpu")
    assert section.name == "generation"
    table, duel = section.tables
    assert len(table.rows) == 7 and "projected" in table.columns[-2] and "plain image" in table.columns[-1]
    assert "head to head" in duel.title and duel.rows[0][0] == "Safer / plain"
    [target] = section.targets
    assert target.name.startswith("Safer / plain, tiny") and target.target == "<= 1.01"
    judged = measured["results"]["sdpa"]["head_to_head"]["wall_per_call"]["safer"]["median"]
    assert target.met == (judged <= 1.01)
    assert target.value.startswith(f"{judged:.3f}")
    if not target.met:
        assert "same FLOPs" in target.cause


def test_safer_target_explains_a_miss():
    stats = lambda m, q1, q3: {"median": m, "q1": q1, "q3": q3, "min": q1, "max": q3, "n": 3}  # noqa: E731
    res = {
        "wall_per_call": {"safer": stats(1.03, 0.99, 1.06)},
        "fastest_per_image": {"safer": 1.0},
        "per_step": {"safer": stats(1.0, 0.99, 1.01)},
        "fixed_delta": {"safer": stats(0.2, 0.1, 0.3)},
    }
    target = report.safer_target("sd15", "sdpa", res)
    assert target.met is False
    assert "noise" in target.cause and "per-step ratio 1.000" in target.cause
    res["wall_per_call"]["safer"] = stats(1.004, 1.0, 1.008)
    assert report.safer_target("sd15", "sdpa", res).met is True


def test_a_model_that_does_not_fit_in_free_memory_is_skipped(monkeypatch):
    from bench import environment

    cfg = replace(g.default_config("sd15"), dtype="float32")
    monkeypatch.setattr(g, "_weights_gb", lambda _cfg: 4.0)
    monkeypatch.setattr(
        environment, "available_ram_gb", lambda: 4.2
    )  # 4.0 GB of weights + 15% headroom > 4.2
    assert g.memory_shortfall(cfg) == (
        "needs about 4.0 GB of weights in float32, only 4.2 GB of RAM is available now"
    )
    monkeypatch.setattr(environment, "available_ram_gb", lambda: 4.7)
    assert g.memory_shortfall(cfg) is None
    monkeypatch.setattr(environment, "available_ram_gb", lambda: 1.0)
    assert g.memory_shortfall(replace(cfg, device="cuda")) is None  # CPU RAM does not bound a CUDA run
    section = g.run_generation(("sd15",), overrides={"dtype": "float32"})
    assert section.notes[-1] == (
        "sd15 skipped: needs about 4.0 GB of weights in float32, only 1.0 GB of RAM is available now"
    )
    assert not section.tables


def test_unknown_model_is_refused():
    with pytest.raises(ValueError, match="unknown benchmark model"):
        systems_mod.model_dirs("sd3")


def test_half_precision_systems_keep_one_dtype():
    # diffusers' from_pipe casts shared modules to its torch_dtype (float32 by default): every system must stay
    # in the configured dtype, or a half-precision safe encoder meets a float32 UNet
    import torch

    cfg = replace(g.default_config("sd15", quick=True), dtype="bfloat16", repeats=1)
    systems, plain = systems_mod.load_systems(cfg)
    for system in systems.values():
        assert system.pipe.unet.dtype == system.pipe.text_encoder.dtype == torch.bfloat16
    systems_mod.timed(systems["safer"], 1, "cpu")()


def test_set_attention_rejects_unknown(tiny_run):
    with pytest.raises(ValueError, match="sdpa or xformers"):
        systems_mod.set_attention(tiny_run[2], "flash")
