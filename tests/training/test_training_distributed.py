"""A two-process CPU run (torch.distributed, gloo) through the real entry point equals one process with the
same global batch."""

import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from saferclip_diffusers.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]
# decomposable loss terms and no dropout: two processes x 4 must equal one process x 8
SHARED = [
    "data.max_unsafe=24",
    "data.max_safe=48",
    "data.val_size=4",
    "optim.epochs=2",
    "lora.dropout=0",
    "loss.weights.pres_text_nbr=0",
    "curriculum.enabled=false",
    "run.log_every=1",
]


def test_two_process_gloo_run_matches_single_process(tmp_path, small_config, trainable_state):
    out = tmp_path / "ddp"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(ROOT / "train" / "train.py"),
        "--config",
        "tiny",
        "--out",
        str(out),
        *SHARED,
        "optim.batch_size=4",
    ]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "finished at step 6" in proc.stdout
    state = (out / "checkpoints" / "step-00000006" / "trainer_state.json").read_text()
    assert '"world_size": 2' in state
    assert (out / "text_encoder" / "model.safetensors").is_file() and "2 process(es)" in (
        out / "README.md"
    ).read_text()

    single = Trainer(small_config(*SHARED, "optim.batch_size=8"), tmp_path / "single")
    single.train()
    ddp = load_file(str(out / "checkpoints" / "step-00000006" / "trainable.safetensors"))
    mine = trainable_state(single)
    assert ddp.keys() == mine.keys()
    for name in mine:
        assert torch.allclose(ddp[name], mine[name], atol=1e-5), name
