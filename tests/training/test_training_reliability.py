"""Run-folder reliability: resume refuses a changed config, folder lock, atomic export under kill -9, torn log
repair, corrupt caches recomputed, constructor without I/O, callbacks and extra loss terms, early stopping."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from saferclip_diffusers.io import EXPORT_MARKER, LockedError, export_state, read_jsonl, sha256_file
from saferclip_diffusers.training.trainer import Trainer, train

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cache(tmp_path_factory):
    return "run.cache_dir=" + str(tmp_path_factory.getbasetemp() / "reliability-cache")


def test_constructor_does_no_io(small_config, tmp_path):
    trainer = Trainer(small_config(), tmp_path / "never")
    assert not (tmp_path / "never").exists() and trainer.checkpoint is None and not trainer.ready


def test_resume_refuses_changed_config_and_records_resumable_changes(small_config, tmp_path, cache, caplog):
    out = tmp_path / "run"
    with Trainer(small_config(cache, "run.stop_after_steps=2"), out) as first:
        assert not first.train().finished
    assert export_state(out) == "incomplete"  # a run folder without a finished export
    changed = small_config(cache, "optim.batch_size=8", "optim.lr=1e-2")
    with pytest.raises(ValueError) as err:
        Trainer(changed, out, resume="latest").setup()
    message = str(err.value)
    assert "optim.batch_size: 4 -> 8" in message and "optim.lr: 0.003 -> 0.01" in message
    assert "run.stop_after_steps" not in message  # resumable keys are not listed as refused
    with pytest.raises(ValueError, match="already holds a training run with checkpoints"):
        Trainer(small_config(cache), out).setup()  # a fresh start would mix two runs
    with (
        caplog.at_level(logging.WARNING),
        Trainer(small_config(cache, "optim.epochs=3"), out, resume="latest") as t,
    ):
        t.setup()
        assert t.state["global_step"] == 2
    assert "optim.epochs" in caplog.text
    rows = read_jsonl(out / "config_changes.jsonl")
    assert {"step": 2, "key": "optim.epochs", "old": 2, "new": 3} in rows
    assert "epochs: 3" in (out / "config.yaml").read_text()


def test_second_trainer_on_the_same_folder_is_refused(small_config, tmp_path, cache):
    with Trainer(small_config(cache), tmp_path / "run") as first:
        first.setup()
        with pytest.raises(LockedError, match=f"pid {os.getpid()}"):
            Trainer(small_config(cache), tmp_path / "run").setup()
    with Trainer(small_config(cache), tmp_path / "run") as again:  # released on close
        again.setup()


def test_torn_log_and_corrupt_caches_are_recovered(small_config, tmp_path, cache, trainable_state, caplog):
    out = tmp_path / "run"
    local_cache = "run.cache_dir=" + str(tmp_path / "cache")
    with Trainer(small_config(local_cache, "run.stop_after_steps=3"), out) as first:
        first.train()
        frozen = first.frozen["text_encoder"].text_safe.clone()
        targets = first.targets.text.clone()
    log = out / "train_log.jsonl"
    with log.open("a") as fh:
        fh.write('{"step": 4, "loss": 0.1')  # a write cut by kill -9
    files = sorted((tmp_path / "cache").glob("*.safetensors"))
    assert {p.name.split("-")[0] for p in files} == {"frozen", "targets"}
    for path in files:
        path.write_bytes(path.read_bytes()[:40])  # truncated caches
    with (
        caplog.at_level(logging.WARNING),
        Trainer(small_config(local_cache), out, resume="latest") as resumed,
    ):
        result = resumed.train()
        assert torch.equal(resumed.frozen["text_encoder"].text_safe, frozen)
        assert torch.equal(resumed.targets.text, targets)
    assert result.finished and caplog.text.count("recomputing it") == 2
    steps = [r["step"] for r in read_jsonl(log)]  # whole lines only, no duplicates
    assert steps == sorted(set(steps)) and steps[-1] == result.global_step


def _run_export_killed(out: Path, overrides: list[str]) -> subprocess.CompletedProcess:
    """Export in a subprocess that kill -9s itself after moving the first exported item into place."""
    script = f"""
import os, signal, sys
from saferclip_diffusers.training import export as ex
real = ex._move_into_place
def move_one_then_die(stage, out):
    first = sorted(p.name for p in stage.iterdir())[0]
    os.replace(stage / first, out / first) if not (out / first).is_dir() else None
    os.kill(os.getpid(), signal.SIGKILL)
ex._move_into_place = move_one_then_die
from saferclip_diffusers.cli.train import main
sys.exit(main(["--config", "tiny", "--out", {str(out)!r}, "--export-only", *{overrides!r}]))
"""
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=240
    )


def test_kill_during_export_leaves_incomplete_then_rerun_completes(
    small_config, small_overrides, tmp_path, cache
):
    out = tmp_path / "run"
    overrides = [*small_overrides, cache.replace("run.cache_dir=", "run.cache_dir=")]
    train(small_config(cache), out)
    assert export_state(out) == "complete"
    proc = _run_export_killed(out, overrides)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert export_state(out) == "incomplete"  # the old marker went first
    assert list(out.glob(".export-*"))  # the staging folder of the killed export is left behind
    from saferclip_diffusers.cli.train import main

    assert main(["--config", "tiny", "--out", str(out), "--export-only", *overrides]) == 0
    assert export_state(out) == "complete" and not list(out.glob(".export-*"))
    marker = json.loads((out / EXPORT_MARKER).read_text())
    assert {"training_prompts.json", "README.md", "text_encoder/model.safetensors"} <= set(marker["files"])
    for rel, digest in marker["files"].items():
        assert sha256_file(out / rel) == digest, rel


def test_callbacks_and_extra_losses(small_config, tmp_path, cache):
    events = []

    class Recorder:
        def on_batch_start(self, trainer, unsafe_idx, keep_idx):
            events.append(("batch", len(unsafe_idx), len(keep_idx)))

        def on_step_end(self, trainer, step, logs):
            events.append(("step", step, "loss" in logs))

    def pull_to_zero(trainer, unsafe_idx, keep_idx, outputs):
        return {"extra_norm": outputs["text_encoder"].T_ts.pow(2).mean()}

    cfg = small_config(cache, "optim.max_steps=2", "optim.grad_accum=2", "curriculum.enabled=false")
    with Trainer(cfg, tmp_path / "run", callbacks=[Recorder()]) as trainer:
        trainer.extra_losses.append(pull_to_zero)
        trainer.train(validate_first=False)
    assert [e for e in events if e[0] == "step"] == [("step", 1, True), ("step", 2, True)]
    assert [e for e in events if e[0] == "batch"] == [("batch", 4, 4)] * 4  # 2 micro-batches per step
    rows = read_jsonl(tmp_path / "run" / "validation.jsonl")
    assert [r["epoch"] for r in rows] == [1]  # validate_first=False skipped epoch 0
    log = read_jsonl(tmp_path / "run" / "train_log.jsonl")
    assert log[0]["extra_norm"] > 0
    terms = sum(
        v
        for k, v in log[0].items()
        if k in ("pres_text", "redir_text", "rel_text_uni", "pres_text_nbr", "hidden_pres", "hidden_redir")
    )
    assert log[0]["loss"] > log[0]["extra_norm"] and terms > 0


def test_early_stopping_stops_when_the_recall_sum_stalls(small_config, tmp_path, cache):
    cfg = small_config(
        cache,
        "optim.lr=1e-12",
        "optim.epochs=6",
        "optim.early_stopping_patience=2",
        "curriculum.enabled=false",
    )
    result = train(cfg, tmp_path / "run", export=False)
    assert result.finished and [r["epoch"] for r in result.validation] == [0, 1, 2]
    assert all(r["recall_sum"] == result.validation[0]["recall_sum"] for r in result.validation)


def test_random_weight_disclaimer_comes_from_the_flag_not_the_path():
    from saferclip_diffusers.training.config import load_config
    from saferclip_diffusers.training.model_card import RunSummary, model_card

    run = RunSummary({"format": "unpaired"}, 10, 20, 2, 5)
    prompts = {"unsafe": [], "safe": []}
    tiny = load_config("tiny")
    assert "random-weight" in model_card(tiny, run, prompts)
    real_named_tiny = load_config("sd15-unpaired", ["encoders.0.model=/models/tiny-but-real/clip"])
    assert "random-weight" not in model_card(real_named_tiny, run, prompts)
    flagged = load_config("sd15-unpaired", ["encoders.0.random_weights=true"])
    assert "random-weight" in model_card(flagged, run, prompts)
