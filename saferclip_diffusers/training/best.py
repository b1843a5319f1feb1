"""Keep the best-validation epoch's weights, and export them (Safe-CLIP's released recipe: early stopping, keep best).

With ``optim.early_stopping_patience`` set, every validation of a *trained* epoch (epoch >= 1: the untrained
encoder is never a candidate) whose recall sum beats the best so far writes the trainable weights to
``best/trainable.safetensors`` and then ``best/best.json`` (epoch, step, score), both atomically. The trainer
state carries ``best_epoch``, ``best_epoch_step`` and ``best_epoch_score``, so checkpoints (and a resumed run)
know which epoch the file must hold. A run killed after a better validation but before the next checkpoint
resumes from an older state, re-validates that epoch (training is deterministic) and rewrites the same file.
The export loads the file into the model first; its model card and ``export_complete.json`` name the epoch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from saferclip_diffusers.io import atomic_save_safetensors, atomic_write_json

BEST_DIR = "best"
BEST_WEIGHTS = "trainable.safetensors"
BEST_INFO = "best.json"


def keeps_best(cfg: Any) -> bool:
    """Whether this config exports the best-validation epoch (early stopping on) rather than the last."""
    return bool(cfg.optim.early_stopping_patience)


def _trainable(trainer: Any) -> dict[str, torch.nn.Parameter]:
    model = trainer.accelerator.unwrap_model(trainer.model)
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def record_if_best(trainer: Any, epoch: int, score: float) -> bool:
    """Save the current weights as the best epoch when ``score`` beats the best trained epoch so far (main only)."""
    st = trainer.state
    if epoch < 1 or not keeps_best(trainer.cfg) or score != score:
        return False
    if st.get("best_epoch") is not None and score <= st["best_epoch_score"]:
        return False
    folder = Path(trainer.out) / BEST_DIR
    state = {n: p.detach().cpu().contiguous() for n, p in _trainable(trainer).items()}
    (folder / BEST_INFO).unlink(missing_ok=True)  # no info file = the weights file is not trusted
    atomic_save_safetensors(state, folder / BEST_WEIGHTS)
    step = st["global_step"]
    atomic_write_json(folder / BEST_INFO, {"epoch": epoch, "step": step, "score": score})
    st["best_epoch"], st["best_epoch_step"], st["best_epoch_score"] = epoch, step, score
    return True


def load_best(trainer: Any) -> int | None:
    """Load the best epoch's weights into the trainer's model for export; returns that epoch (None: use the last).

    Raises when the run state names a best epoch that ``best/`` does not hold (a damaged run folder).
    """
    st = trainer.state
    if not keeps_best(trainer.cfg) or st.get("best_epoch") is None:
        return None
    folder = Path(trainer.out) / BEST_DIR
    info_path = folder / BEST_INFO
    info = json.loads(info_path.read_text()) if info_path.is_file() else None
    if info is None or (info["epoch"], info["step"]) != (st["best_epoch"], st["best_epoch_step"]):
        raise RuntimeError(
            f"{folder} does not hold the best epoch {st['best_epoch']} (step {st['best_epoch_step']}) that the "
            f"run state names (found {info}): re-run training from a checkpoint at or before that epoch, or "
            "export the last weights with optim.early_stopping_patience=null"
        )
    state, params = load_file(str(folder / BEST_WEIGHTS)), _trainable(trainer)
    if set(state) != set(params):
        raise RuntimeError(f"{folder / BEST_WEIGHTS} does not match this config's trainable parameters")
    with torch.no_grad():
        for n, v in state.items():
            params[n].copy_(v.to(params[n].device, params[n].dtype))
    return int(info["epoch"])
