"""Named model sets: what every command means by ``sd15``, ``sdxl``, ``tiny`` and ``tiny-sdxl``.

The real presets name Hub models; the tiny ones are built offline on first use (random weights, see
:mod:`saferclip_diffusers.tiny`), so every command runs without a GPU or a network.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from .encoders import DEFAULT_SAFE_TEXT_ENCODER


@dataclass(frozen=True)
class Preset:
    """A base pipeline, its safe encoder(s) and default generation settings."""

    name: str
    base: str
    safe_text_encoder: str | None
    safe_text_encoder_2: str | None = None
    sdxl: bool = False
    height: int = 512
    width: int = 512
    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    torch_dtype: torch.dtype | None = None  # None: float16 on CUDA, float32 elsewhere
    offline: bool = False
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pipeline_class(self):
        from .pipelines import SaferStableDiffusionPipeline, SaferStableDiffusionXLPipeline

        return SaferStableDiffusionXLPipeline if self.sdxl else SaferStableDiffusionPipeline

    def dtype_for(self, device: str | torch.device) -> torch.dtype:
        if self.torch_dtype is not None:
            return self.torch_dtype
        return torch.float16 if torch.device(device).type == "cuda" else torch.float32


def _tiny(sdxl: bool) -> Preset:
    from .tiny import tiny_model_dir

    return Preset(
        name="tiny-sdxl" if sdxl else "tiny",
        base=str(tiny_model_dir("sdxl" if sdxl else "sd")),
        safe_text_encoder=str(tiny_model_dir("safe-sdxl" if sdxl else "safe-sd")),
        safe_text_encoder_2=str(tiny_model_dir("safe-sdxl")) if sdxl else None,
        sdxl=sdxl,
        height=32,
        width=32,
        num_inference_steps=4,
        guidance_scale=5.0 if sdxl else 7.5,
        torch_dtype=torch.float32,
        offline=True,
        notes="random-weight tiny models built offline; images are noise-like and say nothing about real models",
    )


PRESETS = {
    # evals hook: SD 1.4, the model of every I2P reference figure (the I2P protocol's base)
    "sd14": lambda: Preset(
        name="sd14",
        base="CompVis/stable-diffusion-v1-4",
        safe_text_encoder=DEFAULT_SAFE_TEXT_ENCODER,
    ),
    "sd15": lambda: Preset(
        name="sd15",
        base="stable-diffusion-v1-5/stable-diffusion-v1-5",
        safe_text_encoder=DEFAULT_SAFE_TEXT_ENCODER,
    ),
    "sdxl": lambda: Preset(
        name="sdxl",
        base="stabilityai/stable-diffusion-xl-base-1.0",
        safe_text_encoder=DEFAULT_SAFE_TEXT_ENCODER,
        safe_text_encoder_2=None,
        sdxl=True,
        height=1024,
        width=1024,
        guidance_scale=5.0,
        notes="the released SafeR-CLIP weights cover only the CLIP ViT-L/14 slot; train both with train/ (sdxl config)",
    ),
    "tiny": lambda: _tiny(sdxl=False),
    "tiny-sdxl": lambda: _tiny(sdxl=True),
}


def get_preset(name: str, **overrides: Any) -> Preset:
    """The preset called ``name`` (``sd15``, ``sdxl``, ``tiny``, ``tiny-sdxl``), with fields overridden."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    preset = PRESETS[name]()
    unknown = set(overrides) - set(Preset.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown preset fields: {sorted(unknown)}")
    return replace(preset, **{k: v for k, v in overrides.items() if v is not None})


def load_preset_pipeline(preset: str | Preset, *, device: str = "cpu", keep_original: bool = True, **kwargs: Any):
    """Load the Safer pipeline of a preset on ``device`` (original encoder kept by default, for comparisons)."""
    preset = get_preset(preset) if isinstance(preset, str) else preset
    if "dtype" not in kwargs and "torch_dtype" not in kwargs:
        kwargs["dtype"] = preset.dtype_for(device)
    if preset.offline:
        kwargs.setdefault("local_files_only", True)
    encoders: dict[str, Any] = {"safe_text_encoder": preset.safe_text_encoder}
    if preset.sdxl:
        encoders["safe_text_encoder_2"] = preset.safe_text_encoder_2
    pipe = preset.pipeline_class.from_pretrained(preset.base, **encoders, keep_original=keep_original, **kwargs)
    return pipe.to(device)
