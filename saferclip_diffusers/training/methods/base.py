"""The method contract: what the trainer asks of a training method (SafeR-CLIP, Safe-CLIP, UWM, DES, ...).

A trained method computes one micro-batch's loss from the trainer's public state (``trainer.cfg``,
``trainer.bundles``, ``trainer.frozen``, ``trainer.targets``, ``trainer.data``, ``trainer.device``; live
embeddings via :meth:`Trainer.embed_batch`). A training-free method (``training_free = True``) writes its
export itself in :meth:`Method.run`; the trainer is not built for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch


class Method:
    """Base class; subclasses set ``name`` and override :meth:`batch_loss` (trained) or :meth:`run` (training-free).

    ``default_weights``: the loss terms this method knows and their default weights (``loss.weights`` in a
    config is merged over them; an unknown name is an error). ``default_targets``: ``proximity`` or ``paired``
    (used where ``mining.targets`` is null). ``default_curriculum``: whether ``curriculum.enabled: null`` means on.
    """

    name: str = ""
    training_free: bool = False
    default_targets: str = "proximity"
    default_curriculum: bool = False

    def default_weights(self) -> dict[str, float]:
        return {}

    def setup(self, trainer: Any) -> None:
        """Called once by :meth:`Trainer.setup` after the models, caches and targets exist."""

    def batch_loss(
        self, trainer: Any, unsafe_idx: np.ndarray, keep_idx: np.ndarray
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of one micro-batch (unsafe item indices, preservation safe-caption indices) and its logged terms."""
        raise TypeError(f"method {self.name!r} is training-free: it has no batch loss")

    def run(self, cfg: Any, output_dir: Path) -> Path:
        """Training-free methods: build the safe encoder(s) from ``cfg`` (a ``TrainConfig``) into ``output_dir``."""
        raise TypeError(f"method {self.name!r} is trained: use Trainer(cfg, output_dir).train()")
