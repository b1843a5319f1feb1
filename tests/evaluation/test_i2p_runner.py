"""The I2P run loop in-process with tiny random-weight models (numbers say nothing about real models)."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from saferclip_diffusers.evaluation.prompts import PromptSelection, load_prompts
from saferclip_diffusers.evaluation.protocol import ReportSpec, SystemSpec, get_protocol
from saferclip_diffusers.evaluation.runner import (
    RunOptions,
    initial_latents,
    plan_batches,
    prepare_run,
    run_i2p,
)
from saferclip_diffusers.evaluation.store import ConfigMismatchError, ResultStore, load_results, shard_path
from saferclip_diffusers.evaluation.systems import (
    GenerationBatch,
    build_generators,
    build_system_specs,
    load_base_pipeline,
    sld_configs,
)
from saferclip_diffusers.evaluation.worker import ScoringWorker
from saferclip_diffusers.scoring.q16 import Q16Classifier
from saferclip_diffusers.tiny import tiny_model_dir


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models gain nothing from more threads, and on a busy 2-core machine OpenMP spin-waits cost seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


FAST = ReportSpec(emi_samples=200, ci_samples=100, grid_prompts=2)


def tiny(out, limit=3, systems=("original", "safe"), **overrides):
    config, prompts = prepare_run(
        protocol="tiny", overrides=overrides, selection=PromptSelection(limit=limit), systems=systems
    )
    return config, prompts, RunOptions(output_dir=out, report=FAST, progress=False)


def test_plan_batches_is_a_fixed_layout():
    prompts = pd.DataFrame({"guidance": [7.0, 7.0, 12.0]})
    protocol = get_protocol("tiny", num_images_per_prompt=3)
    assert plan_batches(prompts, protocol, 4) == [
        [(0, 0), (0, 1), (0, 2), (1, 0)],
        [(1, 1), (1, 2), (2, 0), (2, 1)],
        [(2, 2)],
    ]
    per_row = dataclasses.replace(protocol, per_row_guidance=True)
    assert plan_batches(prompts, per_row, 4) == [
        [(0, 0), (0, 1), (0, 2), (1, 0)],
        [(1, 1), (1, 2)],
        [(2, 0), (2, 1), (2, 2)],
    ]
    assert per_row.guidance_for(255.0) == 30.0 and per_row.guidance_for(float("nan")) == 7.5
    with pytest.raises(ValueError):
        plan_batches(prompts, protocol, 0)


def test_initial_latents_per_image_do_not_depend_on_the_count():
    big_seed = 4_290_749_014  # above 2**32 - 1 would fail an int32 path; I2P has seeds up to this
    ten = initial_latents(big_seed, 10, (4, 8, 8))
    two = initial_latents(big_seed, 2, (4, 8, 8))
    assert ten.dtype == torch.float32 and ten.shape == (10, 4, 8, 8)
    assert torch.equal(ten[:2], two)
    assert not torch.equal(ten[0], ten[1])
    assert not torch.equal(initial_latents(big_seed + 1, 2, (4, 8, 8)), two)


@pytest.fixture(scope="module")
def systems():
    base = load_base_pipeline(
        str(tiny_model_dir("sd")), sdxl=False, torch_dtype=torch.float32, device="cpu", local_files_only=True
    )
    specs = [
        SystemSpec("original", "original"),
        SystemSpec("empty-negative", "negative-prompt", negative_prompt=""),
        SystemSpec("negative-prompt", "negative-prompt", negative_prompt="blood, nudity"),
        SystemSpec("safe", "safe", safe_text_encoder=str(tiny_model_dir("safe-sd"))),
    ]
    if sld_configs() is not None:
        specs += [
            SystemSpec("sld-off", "sld", sld={"sld_guidance_scale": 0.0}),
            SystemSpec("sld-max", "sld", sld=sld_configs()["sld-max"]),
        ]
    return base, build_generators(base, specs, sdxl=False, local_files_only=True)


def test_systems_share_unet_and_vae_and_start_from_the_same_latents(systems):
    base, gens = systems
    for name, gen in gens.items():
        assert gen.pipe.unet is base.unet and gen.pipe.vae is base.vae, name
    batch = GenerationBatch(["a red car", "Null"], initial_latents(12, 2, (4, 16, 16)), 7.5, 2, 32, 32)
    images = {name: np.stack([np.asarray(im) for im in gen(batch)[0]]) for name, gen in gens.items()}
    # an empty negative prompt is the unconditional branch of the original: identical images prove identical noise
    np.testing.assert_array_equal(images["empty-negative"], images["original"])
    assert not np.array_equal(images["negative-prompt"], images["original"])
    assert not np.array_equal(images["safe"], images["original"])
    # the per-image redirection scores the safe pipeline reported while generating
    _, scores = gens["safe"](batch)
    assert scores == pytest.approx(gens["safe"].pipe.redirection_scores(batch.prompts), abs=1e-5)
    assert all(s < 0.9999 for s in scores)  # the safe encoder really differs from the original
    if "sld-off" in gens:  # SLD with its guidance switched off is the plain pipeline
        np.testing.assert_allclose(images["sld-off"], images["original"], atol=1)
        assert not np.array_equal(images["sld-max"], images["original"])


def test_building_systems_keeps_the_shared_models_in_their_dtype():
    # diffusers' from_pipe casts shared modules to float32 unless told the dtype: on a GPU that would silently
    # upcast the fp16 UNet and VAE every system shares
    base = load_base_pipeline(
        str(tiny_model_dir("sd")), sdxl=False, torch_dtype=torch.bfloat16, device="cpu", local_files_only=True
    )
    specs = [
        SystemSpec("safe", "safe", safe_text_encoder=str(tiny_model_dir("safe-sd"))),
        SystemSpec("sld-medium", "sld", sld=sld_configs()["sld-medium"]),
    ]
    gens = build_generators(base, specs, sdxl=False, local_files_only=True)
    assert base.unet.dtype == base.vae.dtype == base.text_encoder.dtype == torch.bfloat16
    assert all(gen.pipe.unet is base.unet for gen in gens.values())
    assert gens["safe"].pipe.text_encoder.dtype == torch.bfloat16


def test_system_specs(tmp_path):
    (tmp_path / "enc").mkdir()
    (tmp_path / "other").mkdir()
    specs = build_system_specs(
        ["original", "safe", "negative-prompt"],
        [f"mine={tmp_path / 'enc'}", str(tmp_path / "other")],
        sdxl=False,
    )
    assert [s.name for s in specs] == ["original", "mine", "safe-2:other", "negative-prompt"]
    assert "sld-strong" not in [s.name for s in build_system_specs(["original", "sld-strong"], [], sdxl=True)]
    with pytest.raises(ValueError, match="unknown system"):
        build_system_specs(["original", "esd"], [], sdxl=False)
    with pytest.raises(ValueError, match="--safe-encoder"):
        build_system_specs(["safe"], [], sdxl=False)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    config, prompts, options = tiny(out)
    summary = run_i2p(config, prompts, options)
    return out, summary, load_results(out)[1]


def test_tiny_run_writes_everything(reference_run):
    out, summary, records = reference_run
    assert len(records) == 3 * 2 * 2  # prompts x systems x images
    assert {r["system"] for r in records} == {"original", "safe"}
    assert all(
        type(r["seed"]) is int and r["nudenet"] == [] for r in records
    )  # random tiny images: nothing found
    assert all(r["redirection_score"] is not None for r in records if r["system"] == "safe")
    scores = {r["prompt_id"]: r["redirection_score"] for r in records if r["system"] == "safe"}
    assert summary["metrics"]["safe"]["all"]["redirection_score"] == pytest.approx(
        np.mean(list(scores.values()))
    )
    assert summary["metrics"]["original"]["all"]["redirection_score"] is None
    assert set(summary["vs_original"]) == {"safe"} and summary["vs_original"]["safe"]["all"]["value"] == 0.0
    assert summary["random_weights"] and summary["completeness"]["complete"]
    assert summary["scoring"]["nudenet"]["version"] and "NudeNet only" in summary["scoring"]["unsafe_rule"]
    header = json.loads((out / "results.jsonl").read_text().splitlines()[0])
    assert header["config"]["protocol"]["name"] == "tiny" and header["config"] == summary["config"]
    for name in ("summary.json", "report.md", "categories.png", "grid.png", "prompts.csv"):
        assert (out / name).is_file(), name
    report = (out / "report.md").read_text()
    assert "Random-weight models" in report and "SD 1.4 (I2P CSV)" in report
    assert (
        "SD 1.4 (ml-research/i2p README)" in report and "(all 4703 prompts)" in report
    )  # 3 of 4703: labelled
    assert "NudeNet only" in report.splitlines()[0]  # the tiny preset runs without Q16: said in the title
    assert "vs `original`" in report and "redirection score" in report
    # the CSV's own SD 1.4 figures for these prompts, computed from the CSV directly
    csv = load_prompts(PromptSelection(limit=3))
    assert summary["reference_sd14_csv"]["all"]["inappropriate_probability"] == pytest.approx(
        csv["inappropriate_percentage"].mean()
    )
    assert summary["reference_sd14_readme"]["all"]["inappropriate_probability"] == 37.75
    timing = summary["run_timing"]
    assert timing["images"] == 12 and timing["batches"] == 6 and timing["generation_s"] > 0


def test_resume_after_lost_records_and_a_torn_line_is_identical(reference_run, tmp_path):
    _, ref_summary, ref_records = reference_run
    config, prompts, options = tiny(tmp_path)
    run_i2p(config, prompts, options)
    shard = shard_path(tmp_path, 0, 1)
    lines = shard.read_bytes().splitlines(keepends=True)
    shard.write_bytes(b"".join(lines[:5]) + lines[5][:17])  # four records kept, then a torn write
    summary = run_i2p(config, prompts, options)
    _, records = load_results(tmp_path)
    assert records == ref_records  # image hashes included
    assert summary["metrics"] == ref_summary["metrics"]


def test_a_changed_configuration_is_refused(reference_run, caplog):
    out, _, records = reference_run
    config, prompts, options = tiny(out, num_inference_steps=3)
    with pytest.raises(ConfigMismatchError, match="num_inference_steps: 2 -> 3"):
        run_i2p(config, prompts, options)
    assert load_results(out)[1] == records


def test_q16_path_with_a_test_only_prompt_matrix(tmp_path):
    """Q16 on the tiny CLIP tower with a random (2, 32) prompt matrix: the code path, not Q16."""
    prompts_file = tmp_path / "test_only_q16_prompts.npy"
    np.save(prompts_file, np.random.default_rng(0).standard_normal((2, 32)).astype(np.float32))
    config, prompts = prepare_run(
        protocol="tiny",
        selection=PromptSelection(limit=2),
        systems=["original"],
        q16_clip=str(tiny_model_dir("clip")),
        q16_prompts=str(prompts_file),
    )
    out = tmp_path / "run"
    summary = run_i2p(
        config, prompts, RunOptions(output_dir=out, report=FAST, progress=False, save_images=True)
    )
    _, records = load_results(out)
    assert len(records) == 4 and all((out / r["image_file"]).is_file() for r in records)
    # each record carries the Q16 score of its own image (PNG is lossless: the saved file is what was scored)
    q16 = Q16Classifier(tiny_model_dir("clip"), prompts=str(prompts_file))
    rescored = q16([Image.open(out / r["image_file"]) for r in records])
    assert [r["q16"] for r in records] == pytest.approx(rescored, abs=1e-5)
    assert summary["scoring"]["unsafe_rule"] == "Q16 or NudeNet"
    expected = 100 * np.mean([r["q16"] > 0.5 for r in records])
    assert summary["metrics"]["original"]["all"]["inappropriate_probability"]["value"] == pytest.approx(
        expected
    )
    assert config.scoring.q16_prompts_sha256 and summary["metrics"]["original"]["all"][
        "q16_rate"
    ] == pytest.approx(expected)


def test_tiny_sdxl_run_skips_sld_with_a_notice(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        config, prompts = prepare_run(
            protocol="tiny-sdxl",
            selection=PromptSelection(limit=2),
            systems=["original", "safe", "sld-medium"],
        )
    assert "SD 1.x/2.x only" in caplog.text
    assert [s.name for s in config.systems] == ["original", "safe"]
    summary = run_i2p(config, prompts, RunOptions(output_dir=tmp_path, report=FAST, progress=False))
    assert summary["completeness"] == {"expected_images": 4, "found_images": 4, "complete": True}


class BlockingScorer:
    """A NudeNet stand-in that holds every call until released (to observe the worker, not to score)."""

    def __init__(self, fail: bool = False):
        self.release = threading.Event()
        self.fail = fail
        self.calls = 0

    def detect(self, images):
        self.release.wait(timeout=60)
        self.calls += 1
        if self.fail:
            raise OSError("detector crashed")
        return [[] for _ in images]


def _metas(pid):
    return [{"prompt_id": pid, "system": "original", "image_index": 0, "seed": 1, "categories": []}]


def test_scoring_runs_beside_generation_and_failures_surface(tmp_path):
    image = Image.new("RGB", (8, 8))
    config = {"prompts": {"ids": [1, 2, 3]}, "systems": [{"name": "original"}]}
    with ResultStore(tmp_path, config, "fp") as store:
        scorer = BlockingScorer()
        worker = ScoringWorker(store, scorer, None, queue_size=2)
        for pid in (1, 2, 3):  # one in the scorer's hands, two queued: the generator is not held up
            worker.submit(_metas(pid), [image], None)
        assert scorer.calls == 0 and store.done == set()
        scorer.release.set()
        worker.close()
        assert worker.timing()["batches"] == 3 and worker.timing()["score_s"] > 0
        assert scorer.calls == 3 and store.done == {
            (1, "original", 0),
            (2, "original", 0),
            (3, "original", 0),
        }
    with ResultStore(tmp_path / "failing", config, "fp") as store:
        scorer = BlockingScorer(fail=True)
        worker = ScoringWorker(store, scorer, None, queue_size=1)
        worker.submit(_metas(1), [image], None)
        scorer.release.set()
        with pytest.raises(RuntimeError, match="scoring failed") as err:
            for pid in range(2, 100):
                worker.submit(_metas(pid), [image], None)
            worker.close()
        assert isinstance(err.value.__cause__, OSError)
        assert store.done == set()


def test_a_base_of_the_wrong_family_is_named():
    with pytest.raises(ValueError, match="SDXL protocol"):
        load_base_pipeline(
            str(tiny_model_dir("sdxl")),
            sdxl=False,
            torch_dtype=torch.float32,
            device="cpu",
            local_files_only=True,
        )


class CountingScorer:
    """Any object with NudeNet's detect API is accepted: here one that flags every image as nude."""

    def __init__(self):
        self.images = 0

    def detect(self, images):
        self.images += len(images)
        return [[{"class": "FEMALE_BREAST_EXPOSED", "score": 0.9, "box": [0, 0, 1, 1]}] for _ in images]


def test_a_custom_nudenet_scorer_is_used_through_the_public_hook(tmp_path):
    config, prompts, options = tiny(tmp_path, limit=2, systems=("original",))
    scorer = CountingScorer()
    summary = run_i2p(config, prompts, options, nudenet_scorer=scorer)
    assert scorer.images == 4
    assert summary["metrics"]["original"]["all"]["inappropriate_probability"]["value"] == 100.0


def test_a_failed_start_writes_nothing_and_the_corrected_rerun_is_accepted(tmp_path):
    out = tmp_path / "run"
    bad = tmp_path / "no-such-export"
    with pytest.raises(FileNotFoundError, match="safe text encoder directory does not exist"):
        prepare_run(
            protocol="tiny", selection=PromptSelection(limit=2), systems=["safe"], safe_encoders=[str(bad)]
        )
    # an encoder folder that passes the path check but does not load: the run fails before writing anything
    broken = tmp_path / "broken-encoder"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    config, prompts = prepare_run(
        protocol="tiny", selection=PromptSelection(limit=2), systems=["safe"], safe_encoders=[str(broken)]
    )
    with pytest.raises(Exception):  # noqa: B017 - whatever the loader raises; the point is what is left behind
        run_i2p(config, prompts, RunOptions(output_dir=out, report=FAST, progress=False))
    assert not out.exists()
    config, prompts, options = tiny(out, limit=2, systems=("safe",))
    assert run_i2p(config, prompts, options)["completeness"]["complete"]


def test_an_incomplete_training_export_is_refused(tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    (export / "config.yaml").write_text(
        "method: saferclip\n"
    )  # a training run folder without its completion marker
    with pytest.raises(ValueError, match="incomplete training export"):
        prepare_run(
            protocol="tiny", selection=PromptSelection(limit=2), systems=["safe"], safe_encoders=[str(export)]
        )


def test_the_fingerprint_holds_content_not_paths(tmp_path):
    """The same tiny models copied elsewhere (a changed HOME / tiny-cache location) keep the fingerprint."""
    import shutil

    config, _ = prepare_run(protocol="tiny", selection=PromptSelection(limit=2), systems=["original", "safe"])
    moved = tmp_path / "elsewhere"
    shutil.copytree(config.base, moved / "sd")
    shutil.copytree(config.systems[1].safe_text_encoder, moved / "safe")
    copy, _ = prepare_run(
        protocol="tiny",
        model=str(moved / "sd"),
        selection=PromptSelection(limit=2),
        systems=["original", "safe"],
        safe_encoders=[str(moved / "safe")],
    )
    assert copy.base != config.base and copy.fingerprint() == config.fingerprint()
    with open(next((moved / "safe").rglob("*.safetensors")), "r+b") as f:  # change one byte of the weights
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    changed, _ = prepare_run(
        protocol="tiny",
        model=str(moved / "sd"),
        selection=PromptSelection(limit=2),
        systems=["original", "safe"],
        safe_encoders=[str(moved / "safe")],
    )
    assert changed.fingerprint() != config.fingerprint()


def test_a_corrupt_grid_cell_is_regenerated_on_resume(reference_run, tmp_path, caplog):
    config, prompts, options = tiny(tmp_path, limit=2, systems=("original",))
    run_i2p(config, prompts, options)
    cells = sorted((tmp_path / "grid_cells").rglob("*.png"))
    good = cells[0].read_bytes()
    cells[0].write_bytes(b"not a png")
    records = load_results(tmp_path)[1]
    with caplog.at_level(logging.WARNING):
        run_i2p(config, prompts, options)
    assert "corrupt grid cell" in caplog.text
    assert cells[0].read_bytes() == good and load_results(tmp_path)[1] == records


def test_real_protocols_run_q16_by_default_and_i2p_is_sd14():
    from saferclip_diffusers.evaluation.run_config import resolve_model

    i2p = get_protocol("i2p")
    assert i2p.q16 and get_protocol("fixed").q16 and not get_protocol("tiny").q16
    preset, base = resolve_model(i2p, None)
    assert preset.base == "CompVis/stable-diffusion-v1-4" and base is None
    preset, _ = resolve_model(i2p, "sd15")  # SD 1.5 is one flag away
    assert preset.base == "stable-diffusion-v1-5/stable-diffusion-v1-5"
