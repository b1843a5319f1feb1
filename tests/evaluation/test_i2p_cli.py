"""``eval/i2p.py`` end to end in subprocesses (tiny random-weight models): kill -9 then resume, two processes,
a refused configuration change, rescore. Every run uses one thread per process, so images are bit-identical."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = str(ROOT / "eval" / "i2p.py")
ARGS = [
    "--preset",
    "tiny",
    "--limit",
    "4",
    "--steps",
    "3",
    "--systems",
    "original,safe,negative-prompt",
    "--quiet",
]
TOTAL = 4 * 2 * 3  # prompts x images x systems
# `python -m saferclip_diffusers.launch` is `accelerate launch` with the CPU-torchvision shim applied first (the
# `accelerate` console script itself dies on import on this host)
ACCELERATE = [sys.executable, "-m", "saferclip_diffusers.launch"]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    return e


def run(args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, SCRIPT, *args], env=env(), capture_output=True, text=True, timeout=600, **kwargs
    )


def image_lines(directory: Path) -> int:
    return sum(f.read_text().count('"kind":"image"') for f in (directory / "shards").glob("shard-*.jsonl"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "reference"
    proc = run([*ARGS, "--out", str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tiny random-weight models" in proc.stdout
    return out


def test_kill_9_mid_run_then_resume_equals_an_uninterrupted_run(reference, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, SCRIPT, *ARGS, "--out", str(out)],
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "shards").is_dir() and image_lines(out) >= 3:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    done = image_lines(out)
    assert 3 <= done < TOTAL, done
    assert not (out / "summary.json").exists()
    resumed = run([*ARGS, "--out", str(out)])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{TOTAL - done} of {TOTAL} images to do" in resumed.stderr
    assert (out / "results.jsonl").read_bytes() == (reference / "results.jsonl").read_bytes()
    ours, theirs = (json.loads((d / "summary.json").read_text()) for d in (out, reference))
    assert ours["metrics"] == theirs["metrics"] and ours["completeness"]["complete"]


def test_two_processes_equal_one(reference, tmp_path):
    out = tmp_path / "two"
    with socket.socket() as s:  # a free port for the process group, so parallel test runs do not collide
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # on a CPU-only host --multi_gpu just means torchrun-style processes (gloo); with GPUs it is automatic
    launch = [
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--num_cpu_threads_per_process",
        "1",
        "--main_process_port",
        str(port),
        SCRIPT,
        *ARGS,
        "--out",
        str(out),
    ]
    proc = subprocess.run([*ACCELERATE, *launch], env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shards = sorted(p.name for p in (out / "shards").glob("shard-*.jsonl"))
    assert shards == ["shard-000-of-002.jsonl", "shard-001-of-002.jsonl"]
    per_shard = [(out / "shards" / s).read_text().count('"kind":"image"') for s in shards]
    assert sum(per_shard) == TOTAL and min(per_shard) > 0  # both processes did part of the work
    assert (out / "results.jsonl").read_bytes() == (reference / "results.jsonl").read_bytes()


def test_changed_configuration_is_refused_by_the_cli(reference):
    before = (reference / "results.jsonl").read_bytes()
    changed = ARGS.copy()
    changed[changed.index("--steps") + 1] = "4"
    proc = run([*changed, "--out", str(reference)])
    assert proc.returncode == 2
    assert "different configuration" in proc.stderr and "num_inference_steps: 3 -> 4" in proc.stderr
    assert (reference / "results.jsonl").read_bytes() == before


def test_rescore_and_report_commands(reference):
    proc = run(["rescore", str(reference), "--nudenet-preset", "nudity6"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = reference / "rescore-nudity6_nudity9_0.45"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scoring"]["nudenet_preset"]["name"] == "nudity6"
    assert {"report.md", "categories.png", "grid.png"} <= {p.name for p in out.iterdir()}
    assert run(["rescore", str(reference)]).returncode == 2  # nothing to rescore with
    proc = run(["report", str(reference), "--no-blur"])
    assert proc.returncode == 0 and "IP %" in proc.stdout
