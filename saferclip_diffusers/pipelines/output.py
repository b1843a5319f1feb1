"""What a Safer ``__call__`` returns: :class:`SaferPipelineOutput`, or the parent's tuple layout plus ours."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers.utils import BaseOutput


@dataclass
class SaferPipelineOutput(BaseOutput):
    """Output of the Safer pipelines.

    Args:
        images: the safe model's images (as the parent pipeline returns them).
        nsfw_content_detected: the parent's safety-checker flags (SD 1.x with a checker), else None.
        original_images: with ``return_original=True``, the original model's images from the same noise.
        original_nsfw_content_detected: the checker flags of ``original_images``.
        redirection_scores: per prompt, the lowest cos(original, safe) over the swapped slots; None when no
            original encoder is loaded.
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    nsfw_content_detected: list[bool] | None = None
    original_images: list[PIL.Image.Image] | np.ndarray | torch.Tensor | None = None
    original_nsfw_content_detected: list[bool] | None = None
    redirection_scores: list[float] | None = None


def _has_checker_flags(out: Any) -> bool:
    """Whether the parent's output class carries ``nsfw_content_detected`` (SD 1.x/2.x yes; SDXL, SD3, FLUX no)."""
    return "nsfw_content_detected" in {f.name for f in fields(out)}


def split_output(out: Any, n: int) -> tuple[Any, Any]:
    """A one-batch compare output cut into its first ``n`` images (safe) and the rest (original), same class."""

    def part(rows: slice) -> Any:
        values = {f.name: getattr(out, f.name) for f in fields(out)}
        return type(out)(**{k: (v[rows] if v is not None else None) for k, v in values.items()})

    return part(slice(None, n)), part(slice(n, None))


def pipeline_output(out: Any, out_orig: Any | None, scores: list[float] | None, return_dict: bool):
    """Our output from the parent's output(s). With ``return_dict=False``, the parent's tuple (``(images,)``, or
    ``(images, nsfw)`` where the parent has a safety checker) followed, in compare mode, by the same for the
    original images."""
    result = SaferPipelineOutput(
        images=out.images,
        nsfw_content_detected=getattr(out, "nsfw_content_detected", None),
        original_images=out_orig.images if out_orig is not None else None,
        original_nsfw_content_detected=getattr(out_orig, "nsfw_content_detected", None),
        redirection_scores=scores,
    )
    if return_dict:
        return result
    flags = _has_checker_flags(out)
    items = (result.images, result.nsfw_content_detected) if flags else (result.images,)
    if out_orig is not None:
        items += (
            (result.original_images, result.original_nsfw_content_detected)
            if flags
            else (result.original_images,)
        )
    return items
