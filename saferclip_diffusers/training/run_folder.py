"""A training run folder: its lock, its checkpoints, its logs and the resume check of its config.

Layout (``output_dir``)::

    .train.lock              held while a trainer works here (a second trainer is refused)
    config.yaml              the resolved config of the run
    config_changes.jsonl     resumable settings changed by a resume (step, key, old, new)
    cache/                   frozen embeddings and proximity targets (safetensors; recomputed if corrupt)
    checkpoints/step-N/      accelerate state + trainable weights + trainer_state.json (newest ``keep`` kept)
    train_log.jsonl          loss terms every ``run.log_every`` steps
    validation.jsonl         validation metrics per epoch (epoch 0 = before training)
    best/                    the best trained epoch's weights + best.json (early stopping on; see best.py)
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from pathlib import Path

import yaml

from saferclip_diffusers.io import append_jsonl, atomic_write_text, file_lock, read_jsonl

from .config import config_changes, is_resumable
from .settings import TrainConfig

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
LOCK_FILE = ".train.lock"


def complete_checkpoints(folder: Path) -> list[Path]:
    """Finished checkpoints, oldest first (a ``.tmp`` folder is one whose writing was interrupted)."""
    return sorted(p for p in folder.glob("step-*") if p.suffix != ".tmp" and (p / STATE_FILE).is_file())


def find_checkpoint(output_dir: Path, resume: str | None) -> Path | None:
    """``latest`` -> the newest complete checkpoint (or None); a path -> that checkpoint (must exist)."""
    if not resume:
        return None
    if resume != "latest":
        path = Path(resume)
        if not (path / STATE_FILE).is_file():
            raise FileNotFoundError(f"--resume {resume}: not a checkpoint folder (no {STATE_FILE})")
        return path
    done = complete_checkpoints(Path(output_dir) / "checkpoints")
    return done[-1] if done else None


def lock(output_dir: Path) -> contextlib.AbstractContextManager:
    """The folder lock (``io.file_lock``): a second trainer on the same folder gets a ``LockedError``."""
    return file_lock(Path(output_dir) / LOCK_FILE)


def check_config(output_dir: Path, cfg: TrainConfig, checkpoint: Path | None, step: int) -> None:
    """Refuse a resume whose config changed what is trained; record and allow the resumable changes.

    Starting without a checkpoint in a folder that already holds checkpoints is refused too (it would mix
    two runs). Called by the main process before anything is written.
    """
    out = Path(output_dir)
    saved = out / "config.yaml"
    if checkpoint is None:
        if complete_checkpoints(out / "checkpoints"):
            raise ValueError(
                f"{out} already holds a training run with checkpoints: continue it with --resume latest, "
                "or train into a new --out folder"
            )
        atomic_write_text(saved, cfg.to_yaml())
        return
    if not saved.is_file():
        raise FileNotFoundError(
            f"{saved} is missing: cannot tell whether the resumed run used the same config"
        )
    old = yaml.safe_load(saved.read_text()) or {}
    changes = config_changes(old, cfg.to_dict())
    refused = {k: v for k, v in changes.items() if not is_resumable(k)}
    if refused:
        lines = "\n".join(f"  {k}: {a!r} -> {b!r}" for k, (a, b) in refused.items())
        raise ValueError(
            f"--resume: the config differs from the run in {out} in settings that change what is trained:\n{lines}\n"
            "Resume with the run's own config (see its config.yaml), or train into a new --out folder. "
            "Only the number of epochs/steps, early stopping, run.* (logging, checkpoints) and export.* may change."
        )
    for key, (a, b) in changes.items():
        logger.warning("resuming with a changed setting %s: %r -> %r", key, a, b)
        append_jsonl(out / "config_changes.jsonl", {"step": step, "key": key, "old": a, "new": b})
    if changes:
        atomic_write_text(saved, cfg.to_yaml())


def read_log(path: Path, up_to_step: int | None = None) -> list[dict]:
    """Rows of a JSON-lines log; a torn last line (killed write) is repaired. ``up_to_step`` keeps earlier rows."""
    rows = read_jsonl(path, repair_torn_tail=True)
    if up_to_step is not None:
        rows = [r for r in rows if r.get("step", 0) <= up_to_step]
    return rows


def json_line(row: dict) -> str:
    """One strict-JSON line; a metric that is undefined (NaN: e.g. no validation items) is written as null."""
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
    return json.dumps(clean, allow_nan=False) + "\n"
