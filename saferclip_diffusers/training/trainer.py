"""The training loop: accelerate (mixed precision, DDP, accumulation), checkpoints and exact resume.

``Trainer(cfg, out)`` only records its arguments; :meth:`Trainer.setup` (called by :meth:`Trainer.train` and
:meth:`Trainer.export` when needed) takes the folder lock, checks a resumed config, reads the data, loads the
models, computes or loads the cached frozen embeddings and targets, and loads the checkpoint. The run folder's
layout is described in :mod:`.run_folder`; the loss comes from the configured method (:mod:`.methods`).

Determinism: the sample order of epoch ``e`` is a permutation seeded by ``(seed, e)``, and the random state
(LoRA dropout) is re-seeded from ``(seed, step, micro-batch, rank)`` before every forward pass, so a run
stopped at a checkpoint and resumed with ``resume="latest"`` reproduces the uninterrupted run.

Batches: ``optim.batch_size`` items per process and micro-batch; ``optim.grad_accum`` micro-batches make one
optimizer step (gradients summed with ``1/k`` weights, synchronised across processes only on the last one).
The last global batch of an epoch wraps around to the start of the epoch's order, so every process always
gets full micro-batches.

Hooks: ``callbacks`` are objects with any of ``on_batch_start(trainer, unsafe_idx, keep_idx)`` and
``on_step_end(trainer, step, logs)``; ``trainer.extra_losses`` holds callables
``(trainer, unsafe_idx, keep_idx, outputs) -> {name: tensor}`` whose terms are added to the loss and logged
(``outputs``: the per-slot :class:`~.losses.BatchEmbeddings` of the batch, see :meth:`Trainer.embed_batch`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from saferclip_diffusers.io import append_jsonl, atomic_write_text

from .checkpoints import CheckpointIO
from .losses import BatchEmbeddings
from .methods import get_method
from .plan import EpochPlan
from .robust import robust_losses
from .run_folder import check_config, find_checkpoint, lock, read_log
from .run_folder import json_line as _json_line
from .settings import TrainConfig
from .validating import RECALL_SUM, Validating  # noqa: F401 - RECALL_SUM re-exported

ExtraLoss = Callable[[Any, np.ndarray, np.ndarray, Any], dict[str, torch.Tensor]]


@dataclass
class TrainResult:
    output_dir: Path
    global_step: int
    finished: bool
    validation: list[dict] = field(default_factory=list)


class Trainer(CheckpointIO, EpochPlan, Validating):
    """``Trainer(cfg, out).train()``; use as a context manager (or call :meth:`close`) to release the folder lock."""

    def __init__(
        self,
        cfg: TrainConfig,
        output_dir: str | os.PathLike,
        resume: str | None = None,
        callbacks: Iterable[Any] = (),
    ):
        self.cfg = cfg
        self.out = Path(output_dir)
        self.resume = resume
        self.callbacks = list(callbacks)
        self.extra_losses: list[ExtraLoss] = []
        self.method = get_method(cfg.method)
        self.batch_outputs: dict[str, BatchEmbeddings] | None = None
        self.checkpoint: Path | None = None
        self.ready = False
        self._stack = contextlib.ExitStack()

    # ------------------------------------------------------------------ set-up (all I/O happens here)
    def setup(self) -> Trainer:
        if self.ready:
            return self
        if self.method.training_free:
            raise ValueError(
                f"method {self.cfg.method!r} is training-free: run it with its own run(), not the Trainer"
            )
        try:
            self._setup()
        except BaseException:
            self._stack.close()  # a failed set-up must not keep the folder locked
            raise
        self.ready = True
        return self

    def _setup(self) -> None:
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        from .build import build_run

        cfg = self.cfg
        self.accelerator = Accelerator(
            mixed_precision=cfg.optim.mixed_precision, cpu=cfg.run.cpu, step_scheduler_with_optimizer=False
        )
        self.is_main, self.device = self.accelerator.is_main_process, self.accelerator.device
        self.world, self.rank = self.accelerator.num_processes, self.accelerator.process_index
        if self.is_main:
            self._stack.enter_context(lock(self.out))
        self.checkpoint = find_checkpoint(self.out, self.resume)
        if self.is_main:
            check_config(self.out, cfg, self.checkpoint, self.checkpoint_step())
        self.accelerator.wait_for_everyone()
        set_seed(cfg.seed)
        build_run(
            self
        )  # data, split, bundles, frozen, targets, curriculum, weights, model, optimizer, scheduler
        self.extra_losses += robust_losses(
            cfg
        )  # adversarial training when cfg.robust.enabled (training/robust.py)
        self.state = {
            "global_step": 0,
            "epoch": 1,
            "micro_offset": 0,
            "validated_epoch": -1,
            "world_size": self.world,
            "batch_size": cfg.optim.batch_size,
            "grad_accum": cfg.optim.grad_accum,
            "best_score": None,
            "bad_epochs": 0,
            "best_epoch": None,  # the best trained epoch, exported when early stopping is on (best.py)
            "best_epoch_step": None,
            "best_epoch_score": None,
            "stopped_early": False,
        }
        self.register_hooks()
        if self.checkpoint is not None:
            self.load_checkpoint(self.checkpoint)
        self.method.setup(self)

    def close(self) -> None:
        """Release the folder lock (the trainer can no longer train or export)."""
        self._stack.close()
        self.ready = False

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ one micro-batch
    def batch_loss(
        self, unsafe_idx: np.ndarray, keep_idx: np.ndarray
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The method's loss on one micro-batch plus the extra loss terms; ``logs`` has every term and ``loss``."""
        self._call("on_batch_start", unsafe_idx, keep_idx)
        self.batch_outputs = None
        total, logs = self.method.batch_loss(self, unsafe_idx, keep_idx)
        for extra in self.extra_losses:
            for name, value in extra(self, unsafe_idx, keep_idx, self.batch_outputs).items():
                total = total + value
                logs[name] = float(value.detach().item())
        logs["loss"] = float(total.detach().item())
        return total, logs

    def _call(self, hook: str, *args) -> None:
        for cb in self.callbacks:
            fn = getattr(cb, hook, None)
            if fn is not None:
                fn(self, *args)

    def _seed_step(self, micro: int) -> None:
        torch.manual_seed(
            (self.cfg.seed * 1_000_003 + self.state["global_step"] * 1009 + micro * 31 + self.rank) % 2**63
        )

    def _optimizer_step(self, window: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
        acc, B, sums = self.accelerator, self.cfg.optim.batch_size, {}
        mine = slice(self.rank * B, (self.rank + 1) * B)
        for m, (u, keep) in enumerate(window):
            self._seed_step(m)
            with contextlib.nullcontext() if m == len(window) - 1 else acc.no_sync(self.model):
                loss, logs = self.batch_loss(u[mine], keep[mine])
                acc.backward(loss / len(window))
            for key, v in logs.items():
                sums[key] = sums.get(key, 0.0) + v / len(window)
        if self.cfg.optim.max_grad_norm:
            acc.clip_grad_norm_(self.model.parameters(), self.cfg.optim.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return sums

    # ------------------------------------------------------------------ validation
    # ------------------------------------------------------------------ loop
    def train(self, validate_first: bool = True) -> TrainResult:
        """Train until the configured end (or ``run.stop_after_steps`` steps of this call); resumable."""
        from tqdm.auto import tqdm

        self.setup()
        cfg, st = self.cfg, self.state
        if (
            self.is_main
        ):  # drop log rows past the resumed step (they are recomputed); repairs a torn last line
            rows = read_log(self.out / "train_log.jsonl", st["global_step"])
            atomic_write_text(self.out / "train_log.jsonl", "".join(_json_line(r) for r in rows))
        if validate_first and st["validated_epoch"] < 0:
            self.validate(0)
        start = st["global_step"]
        bar = tqdm(
            total=self.total_steps(),
            initial=start,
            desc=f"train {cfg.name}",
            unit="step",
            disable=not self.accelerator.is_local_main_process,
        )
        self.model.train()
        stopped = False
        while st["epoch"] <= cfg.optim.epochs and not st["stopped_early"]:
            stopped = self._run_epoch(self.epoch_plan(st["epoch"]), start, bar)
            if stopped:
                break
            if st["validated_epoch"] < st["epoch"]:
                self.validate(st["epoch"])
            patience = cfg.optim.early_stopping_patience
            st["stopped_early"] = bool(patience) and st["bad_epochs"] >= patience
            if self._max_steps_reached() or st["stopped_early"]:
                break
            st["epoch"], st["micro_offset"] = st["epoch"] + 1, 0
        bar.close()
        if not stopped and not (self.out / "checkpoints" / f"step-{st['global_step']:08d}").is_dir():
            self.save_checkpoint()
        return TrainResult(self.out, st["global_step"], not stopped, read_log(self.out / "validation.jsonl"))

    def _max_steps_reached(self) -> bool:
        return bool(self.cfg.optim.max_steps) and self.state["global_step"] >= self.cfg.optim.max_steps

    def _run_epoch(self, plan: list, start: int, bar) -> bool:
        """Optimizer steps over the rest of ``plan``; True when ``run.stop_after_steps`` ended this call."""
        cfg, st = self.cfg, self.state
        while st["micro_offset"] < len(plan) and not self._max_steps_reached():
            window = plan[st["micro_offset"] : st["micro_offset"] + cfg.optim.grad_accum]
            logs = self._optimizer_step(window)
            st["global_step"] += 1
            st["micro_offset"] += len(window)
            bar.update(1)
            bar.set_postfix(epoch=st["epoch"], loss=f"{logs['loss']:.4f}")
            if self.is_main and (st["global_step"] % cfg.run.log_every == 0 or st["global_step"] == 1):
                lr = self.scheduler.get_last_lr()[0]
                append_jsonl(
                    self.out / "train_log.jsonl",
                    {"step": st["global_step"], "epoch": st["epoch"], "lr": lr, **logs},
                )
            self._call("on_step_end", st["global_step"], logs)
            stopped = bool(cfg.run.stop_after_steps) and st["global_step"] - start >= cfg.run.stop_after_steps
            if st["global_step"] % cfg.run.checkpoint_every == 0 or stopped:
                self.save_checkpoint()
            if stopped:
                return True
        return False

    # ------------------------------------------------------------------ export
    def export(self, push_to_hub: str | None = None) -> Path:
        """Write the merged encoders, model card and training prompts into the run folder, atomically.

        With early stopping on, the weights exported are the best-validation trained epoch's (:mod:`.best`).
        """
        from .best import load_best
        from .export import export_from_trainer

        self.setup()
        if self.is_main:
            epoch = load_best(self)  # None: the last weights (no early stopping, or nothing validated)
            export_from_trainer(self, push_to_hub or self.cfg.export.push_to_hub, exported_epoch=epoch)
        self.accelerator.wait_for_everyone()
        return self.out


def train(
    cfg: TrainConfig,
    output_dir: str | os.PathLike,
    resume: str | None = None,
    export: bool = True,
    callbacks: Iterable[Any] = (),
) -> TrainResult:
    """Train (or resume) and, when the run finished, export. Returns where things are and the validation rows."""
    with Trainer(cfg, output_dir, resume, callbacks) as trainer:
        result = trainer.train()
        if result.finished and export:
            trainer.export()
        trainer.accelerator.end_training()
    return result
