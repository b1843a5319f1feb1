"""The text-encoder slots of a Safer pipeline: which hold safe encoders, where their originals live, and how
``components`` and a saved folder show them. Shared by every Safer pipeline (SD, SDXL, SD3, FLUX).

A *slot* is one text-encoder attribute of the diffusers pipeline (``text_encoder``, ``text_encoder_2``, ...). In a
Safer pipeline a swapped slot holds the **safe** encoder, so the parent's own code conditions the model on it;
its original lives in ``original_<slot>`` when kept (``keep_original=True``, or ``from_pipe``, where it is free).
A slot that was not swapped is its own original; a slot set to ``None`` (SD3's ``text_encoder_3=None``) is empty
in both branches, exactly as in diffusers. The swapped slots are recorded in the config as
``safe_text_encoder_slots``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ..io import atomic_write_json


def diffusers_parent(cls: type) -> type:
    """The diffusers pipeline class a Safer pipeline (or a user subclass of one) extends."""
    return next(c for c in cls.__mro__ if c.__module__.startswith("diffusers."))


class SaferSlotsMixin:
    """Slot bookkeeping, ``components`` and ``save_pretrained`` of every Safer pipeline."""

    @property
    def safe_slots(self) -> list[str]:
        """The slots that hold a safe encoder."""
        return list(self.config.get("safe_text_encoder_slots") or [])

    def original_encoder(self, slot: str) -> torch.nn.Module | None:
        """The original encoder of ``slot``: ``original_<slot>`` if swapped, else the slot's own encoder."""
        if slot in self.safe_slots:
            return getattr(self, f"original_{slot}", None)
        return getattr(self, slot)

    @property
    def has_original(self) -> bool:
        """Whether every swapped slot's original encoder is loaded."""
        return all(self.original_encoder(slot) is not None for slot in self.safe_slots)

    @contextmanager
    def originals_in_slots(self) -> Iterator[None]:
        """Put the original encoders into their slots for the block (the config is not touched), then the safe ones back."""
        saved = {slot: self.__dict__[slot] for slot in self.safe_slots}
        self.__dict__.update({slot: self.original_encoder(slot) for slot in saved})
        try:
            yield
        finally:
            self.__dict__.update(saved)

    @property
    def components(self) -> dict[str, Any]:
        """The parent's components; ``original_<slot>`` only when loaded, so ``Other(**pipe.components)`` works."""
        return {k: v for k, v in super().components.items() if not (k.startswith("original_") and v is None)}

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        """diffusers' ``save_pretrained``; ``model_index.json`` names the diffusers parent class.

        So plain diffusers (``DiffusionPipeline.from_pretrained``, ``AutoPipelineForText2Image`` or the parent
        class), without this package, loads the folder as the parent pipeline with the safe encoders in their
        slots (it logs that ``original_*`` / ``safe_text_encoder_slots`` are ignored). The Safer class name is
        kept in ``_safer_class_name``; a Safer ``from_pretrained`` recognises the folder by
        ``safe_text_encoder_slots``.
        """
        super().save_pretrained(save_directory, *args, **kwargs)
        path = Path(save_directory) / "model_index.json"
        index = json.loads(path.read_text())
        index["_class_name"] = diffusers_parent(type(self)).__name__
        index["_safer_class_name"] = type(self).__name__
        atomic_write_json(path, index, indent=2)
