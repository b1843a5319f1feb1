"""Safe-CLIP (arXiv 2311.16254): its 8 redirection/preservation terms toward the paired safe item."""

from __future__ import annotations

from ..losses import SAFECLIP_WEIGHTS
from .saferclip import CLIPLossMethod


class SafeClip(CLIPLossMethod):
    name = "safeclip"
    default_targets = "paired"
    default_curriculum = False

    def default_weights(self) -> dict[str, float]:
        return dict(SAFECLIP_WEIGHTS)
