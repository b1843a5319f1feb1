"""What ControlNet text-to-image adds to compare mode: the condition image sets the default size and is doubled
with the batch (a single image or a one-item batch is broadcast by diffusers and needs nothing)."""

from __future__ import annotations

from typing import Any

import torch


class SaferControlNetMixin:
    @property
    def _one_batch_compare(self) -> bool:
        from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

        return not isinstance(self.controlnet, MultiControlNetModel)  # per-ControlNet image lists: two passes

    def _double_inputs(self, kwargs: dict, doubled: dict) -> None:
        image = kwargs.get("image")
        if isinstance(image, list) and len(image) > 1:
            doubled["image"] = image + image
        elif isinstance(image, torch.Tensor) and image.ndim == 4 and image.shape[0] > 1:
            doubled["image"] = torch.cat([image, image])

    def _default_size(self, kwargs: dict) -> tuple[int, int]:
        """diffusers' ControlNet default: the condition image's size, rounded down to the VAE's factor."""
        image: Any = kwargs.get("image")
        first = image[0] if isinstance(image, list) else image
        height, width = self.control_image_processor.get_default_height_width(
            first, kwargs.get("height"), kwargs.get("width")
        )
        return height, width
