"""The method interface every training method implements (one trainer, several methods).

A trained method gives the trainer one loss per batch (:meth:`Method.batch_loss`, after :meth:`Method.setup`);
a training-free method (``training_free = True``) produces its export directly with :meth:`Method.run`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch


class Method:
    name: str = ""
    training_free: bool = False

    def setup(self, trainer: Any) -> None:
        """Prepare per-run state (targets, frozen copies) once the trainer has its data and encoders."""

    def batch_loss(self, trainer: Any, unsafe_idx: np.ndarray, keep_idx: np.ndarray) -> tuple[torch.Tensor, dict[str, float]]:
        raise TypeError(f"method {self.name!r} is training-free: it has no batch loss")

    def run(self, cfg: Any, output_dir: Path) -> Path:
        raise TypeError(f"method {self.name!r} is trained: run it through the trainer")
