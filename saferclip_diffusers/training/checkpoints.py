"""Checkpoints of a training run: accelerate state + the trainable weights (safetensors) + the loop state.

``checkpoints/step-N/`` is written into ``step-N.tmp`` and renamed when complete; the newest
``run.keep_checkpoints`` are kept. Only parameters that require a gradient are saved (LoRA adapters, or the
whole tower for full fine-tuning), so a checkpoint is small and loads only into the same trainable layout.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from saferclip_diffusers.io import atomic_save_safetensors, atomic_write_json

from .run_folder import STATE_FILE, complete_checkpoints

logger = logging.getLogger(__name__)

TRAINABLE_FILE = "trainable.safetensors"


class CheckpointIO:
    """Mixed into :class:`~.trainer.Trainer` (uses its ``accelerator``, ``out``, ``state`` and ``cfg``)."""

    def checkpoint_step(self) -> int:
        """The global step of the checkpoint being resumed (0 when starting fresh)."""
        if self.checkpoint is None:
            return 0
        return int(json.loads((self.checkpoint / STATE_FILE).read_text()).get("global_step", 0))

    def register_hooks(self) -> None:
        self.accelerator.register_save_state_pre_hook(self._save_hook)
        self.accelerator.register_load_state_pre_hook(self._load_hook)

    def _save_hook(self, models, weights, output_dir):
        if self.is_main:
            unwrapped = self.accelerator.unwrap_model(models[0])
            state = {
                n: p.detach().cpu().contiguous() for n, p in unwrapped.named_parameters() if p.requires_grad
            }
            atomic_save_safetensors(state, Path(output_dir) / TRAINABLE_FILE)
        while weights:
            weights.pop()

    def _load_hook(self, models, input_dir):
        unwrapped = self.accelerator.unwrap_model(models[0])
        state = load_file(str(Path(input_dir) / TRAINABLE_FILE))
        params = dict(unwrapped.named_parameters())
        expected = {n for n, p in params.items() if p.requires_grad}
        if set(state) != expected:
            raise ValueError(
                f"checkpoint {input_dir} does not match this config's trainable parameters "
                f"(missing {sorted(expected - set(state))[:3]}, unexpected {sorted(set(state) - expected)[:3]})"
            )
        with torch.no_grad():
            for n, v in state.items():
                params[n].copy_(v)
        while models:
            models.pop()

    def load_checkpoint(self, path: Path) -> None:
        self.accelerator.load_state(str(path))
        self.state.update(json.loads((path / STATE_FILE).read_text()))
        if self.state["world_size"] != self.world and self.is_main:
            logger.warning(
                "resuming with %d processes (checkpoint: %d): the sample order changes from here",
                self.world,
                self.state["world_size"],
            )
        self.state["world_size"] = self.world

    def save_checkpoint(self) -> Path:
        step = self.state["global_step"]
        final = self.out / "checkpoints" / f"step-{step:08d}"
        tmp = final.with_name(final.name + ".tmp")
        if self.is_main and tmp.exists():
            shutil.rmtree(tmp)
        self.accelerator.wait_for_everyone()
        self.accelerator.save_state(str(tmp))
        self.accelerator.wait_for_everyone()
        if self.is_main:
            atomic_write_json(tmp / STATE_FILE, self.state)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            for old in complete_checkpoints(final.parent)[: -self.cfg.run.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        return final
