"""SafeR-CLIP / Safe-CLIP training of safe CLIP text encoders for Stable Diffusion and SDXL.

``load_config`` (config.py; sections in settings.py) -> ``Trainer`` / ``train`` (trainer.py; parts built by
build.py, checkpoints.py, run_folder.py): methods (methods/), data readers (data.py), proximity mining (mining.py)
and targets (targets.py), curriculum (curriculum.py), losses (losses.py), models and the frozen reference
(models.py, reference.py), validation (validation.py), export (export.py, model_card.py). Command line:
``saferclip_diffusers.cli.train`` (``train/train.py``).
"""

from __future__ import annotations

import importlib

from .config import TrainConfig, load_config, shipped_configs

_LAZY = {"Trainer": ".trainer", "TrainResult": ".trainer", "train": ".trainer", "export_run": ".export"}

__all__ = ["TrainConfig", "load_config", "shipped_configs", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
