"""saferclip-diffusers: SafeR-CLIP safe text encoders for Stable Diffusion and SDXL in diffusers.

Importing the package applies the host workarounds in :mod:`saferclip_diffusers._compat` once, first (onnxruntime's
telemetry opt-outs; a CPU torch beside a CUDA-linked torchvision), so everything imported after it is covered.
The heavy modules load lazily on first attribute access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from . import _compat

_compat.apply()

__version__ = "0.1.0"

_LAZY = {
    "SaferPipelineOutput": "saferclip_diffusers.pipelines",
    "SaferStableDiffusionPipeline": "saferclip_diffusers.pipelines",
    "SaferStableDiffusionImg2ImgPipeline": "saferclip_diffusers.pipelines",
    "SaferStableDiffusionInpaintPipeline": "saferclip_diffusers.pipelines",
    "SaferStableDiffusionControlNetPipeline": "saferclip_diffusers.pipelines",
    "SaferStableDiffusionXLPipeline": "saferclip_diffusers.pipelines",
    "SaferStableDiffusionXLImg2ImgPipeline": "saferclip_diffusers.pipelines",
    "SaferStableDiffusionXLInpaintPipeline": "saferclip_diffusers.pipelines",
    "SaferStableDiffusionXLControlNetPipeline": "saferclip_diffusers.pipelines",
    "SaferStableDiffusion3Pipeline": "saferclip_diffusers.pipelines",
    "SaferFluxPipeline": "saferclip_diffusers.pipelines",
    "load_safe_text_encoder": "saferclip_diffusers.encoders",
    "read_training_prompts": "saferclip_diffusers.encoders",
    "DEFAULT_SAFE_TEXT_ENCODER": "saferclip_diffusers.encoders",
    "get_preset": "saferclip_diffusers.presets",
    "load_preset_pipeline": "saferclip_diffusers.presets",
    "PRESETS": "saferclip_diffusers.presets",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'saferclip_diffusers' has no attribute {name!r}")


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .encoders import DEFAULT_SAFE_TEXT_ENCODER, load_safe_text_encoder, read_training_prompts  # noqa: F401
    from .pipelines import (  # noqa: F401
        SaferPipelineOutput,
        SaferStableDiffusionControlNetPipeline,
        SaferStableDiffusionImg2ImgPipeline,
        SaferStableDiffusionInpaintPipeline,
        SaferStableDiffusionPipeline,
        SaferStableDiffusionXLControlNetPipeline,
        SaferStableDiffusionXLImg2ImgPipeline,
        SaferStableDiffusionXLInpaintPipeline,
        SaferStableDiffusionXLPipeline,
    )
    from .presets import PRESETS, get_preset, load_preset_pipeline  # noqa: F401
