"""SafeR-CLIP (arXiv 2511.16743): proximity targets, relative redirection, curriculum, preservation."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..losses import SAFERCLIP_WEIGHTS, method_loss
from .base import Method


class CLIPLossMethod(Method):
    """A method whose loss is a weighted sum of :mod:`..losses` terms on each encoder's batch embeddings."""

    def batch_loss(
        self, trainer: Any, unsafe_idx: np.ndarray, keep_idx: np.ndarray
    ) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = trainer.cfg
        outputs = trainer.embed_batch(unsafe_idx, keep_idx)
        total, logs = 0.0, {}
        for b in trainer.bundles:
            loss, terms = method_loss(
                self.name,
                outputs[b.slot],
                trainer.weights,
                cfg.loss.logit_scale,
                cfg.loss.relative_scale,
                b.settings.hidden_weight,
                cfg.loss.neighbour_scale,
            )
            total = total + b.settings.weight * loss
            prefix = f"{b.slot}/" if len(trainer.bundles) > 1 else ""
            logs.update({prefix + name: v.item() for name, v in terms.items()})
        return total, logs


class SaferClip(CLIPLossMethod):
    name = "saferclip"
    default_targets = "proximity"
    default_curriculum = True

    def default_weights(self) -> dict[str, float]:
        return dict(SAFERCLIP_WEIGHTS)
