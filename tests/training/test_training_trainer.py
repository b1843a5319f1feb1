"""The training loop: gradient accumulation, exact resume, checkpoints, logs."""

import json

import pytest
import torch

from saferclip_diffusers.io import read_jsonl
from saferclip_diffusers.training.run_folder import find_checkpoint
from saferclip_diffusers.training.trainer import Trainer, train

DECOMPOSABLE = ["lora.dropout=0", "loss.weights.pres_text_nbr=0", "curriculum.enabled=false"]


def _first_step_grads(cfg, out, trainable_state):
    """Train one optimizer step; return the gradient handed to the optimizer and the weights after it."""
    trainer = Trainer(cfg, out).setup()
    seen = {}
    inner = trainer.optimizer.optimizer
    original_step = inner.step

    def recording_step(*args, **kwargs):
        for group in inner.param_groups:
            for p in group["params"]:
                seen[id(p)] = p.grad.detach().clone()
        return original_step(*args, **kwargs)

    inner.step = recording_step
    trainer.train()
    model = trainer.accelerator.unwrap_model(trainer.model)
    grads = {n: seen[id(p)] for n, p in model.named_parameters() if p.requires_grad}
    return grads, trainable_state(trainer)


@pytest.mark.filterwarnings(r"ignore:Seems like `optimizer.step\(\)` has been overridden")
def test_gradient_accumulation_equals_one_big_batch(small_config, tmp_path, trainable_state):
    common = DECOMPOSABLE + ["optim.max_steps=1", "run.cache_dir=" + str(tmp_path / "cache")]
    g_acc, w_acc = _first_step_grads(
        small_config(*common, "optim.batch_size=4", "optim.grad_accum=2"), tmp_path / "a", trainable_state
    )
    g_big, w_big = _first_step_grads(
        small_config(*common, "optim.batch_size=8", "optim.grad_accum=1"), tmp_path / "b", trainable_state
    )
    g_one, _ = _first_step_grads(
        small_config(*common, "optim.batch_size=4", "optim.grad_accum=1"), tmp_path / "c", trainable_state
    )
    assert g_acc.keys() == g_big.keys()
    for n in g_acc:
        assert torch.allclose(g_acc[n], g_big[n], rtol=1e-4, atol=1e-7), n
        assert torch.allclose(w_acc[n], w_big[n], rtol=1e-4, atol=1e-6), n
    # the control: one micro-batch alone gives a different gradient (so the comparison can fail)
    assert any(not torch.allclose(g_one[n], g_big[n], rtol=1e-3, atol=1e-6) for n in g_big)


def test_stop_and_resume_latest_equals_uninterrupted(small_config, tmp_path, trainable_state):
    cache = "run.cache_dir=" + str(tmp_path / "cache")
    cfg = small_config(
        cache, "run.checkpoint_every=2"
    )  # dropout on: resume must restore the random state too
    full = Trainer(cfg, tmp_path / "full")
    full_result = full.train()
    assert full_result.finished and full_result.global_step >= 5

    first = Trainer(small_config(cache, "run.checkpoint_every=2", "run.stop_after_steps=3"), tmp_path / "cut")
    stopped = first.train()
    first.close()  # releases the folder lock
    assert not stopped.finished and stopped.global_step == 3
    assert find_checkpoint(tmp_path / "cut", "latest").name == "step-00000003"
    resumed = Trainer(cfg, tmp_path / "cut", resume="latest").setup()
    assert resumed.state["global_step"] == 3
    result = resumed.train()
    assert result.finished and result.global_step == full_result.global_step
    a, b = trainable_state(full), trainable_state(resumed)
    for n in a:
        assert torch.allclose(a[n], b[n], atol=1e-6), n
    # the logs match too: same validation rows, one per epoch (0 = before training), no duplicates
    rows_full = read_jsonl(tmp_path / "full" / "validation.jsonl")
    rows_cut = read_jsonl(tmp_path / "cut" / "validation.jsonl")
    assert [r["epoch"] for r in rows_cut] == [0, 1, 2] == [r["epoch"] for r in rows_full]
    for x, y in zip(rows_full, rows_cut, strict=True):
        assert x == pytest.approx(y, abs=1e-6)
    steps = [r["step"] for r in read_jsonl(tmp_path / "cut" / "train_log.jsonl")]
    assert steps == sorted(set(steps))
    # only the newest checkpoints are kept
    kept = sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir())
    assert len(kept) == cfg.run.keep_checkpoints and kept[-1] == f"step-{result.global_step:08d}"
    state = json.loads((tmp_path / "cut" / "checkpoints" / kept[-1] / "trainer_state.json").read_text())
    assert state["global_step"] == result.global_step


def test_resume_without_checkpoint_starts_fresh_and_bad_path_errors(small_config, tmp_path):
    assert find_checkpoint(tmp_path, "latest") is None
    for name in ("step-00000002", "step-00000005.tmp"):  # an interrupted write is never resumed from
        (tmp_path / "checkpoints" / name).mkdir(parents=True)
        (tmp_path / "checkpoints" / name / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoints" / "step-00000009").mkdir()  # no state file: incomplete
    assert find_checkpoint(tmp_path, "latest").name == "step-00000002"
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        find_checkpoint(tmp_path, str(tmp_path))


def test_bf16_mixed_precision_runs_on_cpu(small_config, tmp_path, fresh_accelerate):
    result = train(
        small_config("optim.mixed_precision=bf16", "optim.max_steps=2"), tmp_path / "bf16", export=False
    )
    assert result.finished and result.global_step == 2
    assert torch.isfinite(torch.tensor(result.validation[-1]["text_encoder/drift_safe"]))
