"""Early stopping exports the best-validation epoch's weights, also after a kill -9 and resume between epochs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
# validation recall sum by epoch: the best trained epoch is 2; patience 2 stops the run after epoch 4
SCORES = {0: 0.1, 1: 0.3, 2: 0.9, 3: 0.5, 4: 0.4, 5: 0.95}
OVERRIDES = [
    "data.max_unsafe=12",
    "data.max_safe=24",
    "data.val_size=4",
    "optim.batch_size=4",
    "optim.epochs=6",
    "optim.lr=3e-2",
    "optim.early_stopping_patience=2",
    "curriculum.enabled=false",
    "run.checkpoint_every=2",  # 8 training prompts / batch 4: one checkpoint at the end of every epoch
    "run.keep_checkpoints=10",
    "export.dtype=float32",
]

# Scripted validation: the recall sum of each epoch comes from SCORES, and every validated epoch's merged text
# weights are saved next to the run (what an export of that epoch would hold).
HARNESS = """
import torch
from safetensors.torch import save_file
from saferclip_diffusers.training import validating, validation
from saferclip_diffusers.training.export import as_export_class, merged_copy

SCORES = {scores!r}
_validate = validating.Validating.validate

def validate(self, epoch):
    def fake(bundle, text_model, *args, **kwargs):
        plain = as_export_class(merged_copy(text_model), bundle.settings.resolved_export_class())
        sd = {{k: v.detach().contiguous() for k, v in plain.state_dict().items()}}
        save_file(sd, str(self.out.parent / f"epoch-{{epoch}}-{{self.out.name}}.safetensors"))
        return {{"redirect@1": SCORES[epoch]}}
    real, validation.evaluate_encoder = validation.evaluate_encoder, fake
    try:
        row = _validate(self, epoch)
    finally:
        validation.evaluate_encoder = real
    if epoch == {kill_after}:
        import os, signal
        os.kill(os.getpid(), signal.SIGKILL)
    return row

validating.Validating.validate = validate
"""


def _train(out: Path, cache: str, kill_after: int = -1) -> subprocess.CompletedProcess:
    script = HARNESS.format(scores=SCORES, kill_after=kill_after) + (
        "import sys\nfrom saferclip_diffusers.cli.train import main\n"
        f"sys.exit(main(['--config', 'tiny', '--out', {str(out)!r}, *{[*OVERRIDES, cache]!r}, *sys.argv[1:]]))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    args = ["--resume", "latest"] if (out / "checkpoints").is_dir() else []
    return subprocess.run(
        [sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_best_epoch_is_exported_and_survives_kill_and_resume(tmp_path):
    cache = "run.cache_dir=" + str(tmp_path / "cache")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    proc = _train(straight, cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    exported = load_file(str(straight / "text_encoder" / "model.safetensors"))
    best = load_file(str(tmp_path / "epoch-2-straight.safetensors"))
    last = load_file(str(tmp_path / "epoch-4-straight.safetensors"))
    assert not (tmp_path / "epoch-5-straight.safetensors").exists()  # early stopping ended the run at epoch 4
    assert set(exported) == set(best)
    assert any(
        not torch.equal(best[k], last[k]) for k in best
    )  # the epochs differ: the test can tell them apart
    for k in best:
        assert torch.equal(exported[k], best[k]), k
    marker = json.loads((straight / "export_complete.json").read_text())
    assert (marker["exported_epoch"], marker["exported_step"]) == (2, 4)
    assert "**epoch 2** (step 4)" in (straight / "README.md").read_text()

    # kill -9 right after epoch 3's validation (checkpoint at step 6 holds the state after epoch 2), then resume
    proc = _train(killed, cache, kill_after=3)
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert json.loads((killed / "best" / "best.json").read_text())["epoch"] == 2
    assert not (killed / "export_complete.json").exists()
    proc = _train(killed, cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = load_file(str(killed / "text_encoder" / "model.safetensors"))
    for k in best:
        assert torch.equal(resumed[k], best[k]), k
    assert json.loads((killed / "export_complete.json").read_text())["exported_epoch"] == 2


def test_without_early_stopping_the_last_weights_are_exported(small_config, tmp_path, tmp_path_factory):
    from saferclip_diffusers.training.trainer import Trainer

    cache = "run.cache_dir=" + str(tmp_path_factory.getbasetemp() / "best-cache")
    with Trainer(small_config(cache, "optim.lr=3e-2", "export.dtype=float32"), tmp_path / "run") as trainer:
        trainer.train()
        trainer.export()
        assert trainer.state["best_epoch"] is None and not (tmp_path / "run" / "best").exists()
        marker = json.loads((tmp_path / "run" / "export_complete.json").read_text())
        assert marker["exported_epoch"] is None and marker["exported_step"] == trainer.state["global_step"]
