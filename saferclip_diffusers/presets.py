"""Named model sets: the one registry of what every command means by ``sd14``, ``sd15``, ``sdxl``, ``tiny``, ...

A preset is a base pipeline, its safe encoder(s) and explicit flags: ``random_weights`` (the numbers it gives
say nothing about real models and are labelled so), ``offline`` (built locally, never fetched). A tool may attach
its own protocol defaults to a preset name, but the models it loads for that name are the ones given here.
Nothing here (or in any tool) switches behaviour on a path: the flags say it.

The tiny presets are built offline on first use (random weights, :mod:`saferclip_diffusers.tiny`), so every
command runs without a GPU or a network. ``sd3`` / ``flux`` name the real Hub models; their Safer pipeline
classes come from :mod:`saferclip_diffusers.pipelines` where installed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from .devices import resolve_dtype
from .encoders import DEFAULT_SAFE_TEXT_ENCODER

PIPELINE_CLASSES = {
    "sd": "SaferStableDiffusionPipeline",
    "sdxl": "SaferStableDiffusionXLPipeline",
    "sd3": "SaferStableDiffusion3Pipeline",
    "flux": "SaferFluxPipeline",
}


@dataclass(frozen=True)
class Preset:
    """A base pipeline, its safe encoder(s), explicit flags and default generation settings."""

    name: str
    base: str
    safe_text_encoder: str | None
    safe_text_encoder_2: str | None = None
    family: str = "sd"  # sd (1.x/2.x), sdxl, sd3, flux
    height: int = 512
    width: int = 512
    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    torch_dtype: torch.dtype | None = None  # None: float16 on CUDA, float32 elsewhere
    random_weights: bool = False  # results are meaningless for real models; label them
    offline: bool = False  # built locally; never fetched from the Hub
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def sdxl(self) -> bool:
        return self.family == "sdxl"

    @property
    def pipeline_class(self) -> type:
        """The Safer text-to-image pipeline class of this preset's family."""
        import saferclip_diffusers

        name = PIPELINE_CLASSES[self.family]
        try:
            return getattr(saferclip_diffusers, name)
        except AttributeError:
            raise ValueError(
                f"preset {self.name!r} needs {name}, which this installation does not provide"
            ) from None

    def dtype_for(self, device: str | torch.device) -> torch.dtype:
        return self.torch_dtype if self.torch_dtype is not None else resolve_dtype("auto", device)

    def safe_encoders(self) -> dict[str, str | None]:
        """The ``from_pretrained`` keyword arguments naming this preset's safe encoder(s)."""
        encoders = {"safe_text_encoder": self.safe_text_encoder}
        if self.family in ("sdxl", "sd3"):
            encoders["safe_text_encoder_2"] = self.safe_text_encoder_2
        return encoders


_TINY = {  # family: (preset name, base kind, safe-encoder kind, guidance scale)
    "sd": ("tiny", "sd", "safe-sd", 7.5),
    "sdxl": ("tiny-sdxl", "sdxl", "safe-sdxl", 5.0),
    "sd3": ("tiny-sd3", "sd3", "safe-sd3", 7.0),
    "flux": ("tiny-flux", "flux", "safe-flux", 3.5),
}


def _tiny(family: str) -> Preset:
    from .tiny import tiny_model_dir

    name, base, safe, guidance = _TINY[family]
    safe_dir = str(tiny_model_dir(safe))  # a diffusers-layout export: it fills every safe slot of the family
    return Preset(
        name=name,
        base=str(tiny_model_dir(base)),
        safe_text_encoder=safe_dir,
        safe_text_encoder_2=safe_dir if family in ("sdxl", "sd3") else None,
        family=family,
        height=32,
        width=32,
        num_inference_steps=4,
        guidance_scale=guidance,
        torch_dtype=torch.float32,
        random_weights=True,
        offline=True,
        notes="random-weight tiny models built offline; images are noise-like and say nothing about real models",
    )


PRESETS: dict[str, Callable[[], Preset]] = {
    "sd14": lambda: Preset(
        name="sd14",
        base="CompVis/stable-diffusion-v1-4",
        safe_text_encoder=DEFAULT_SAFE_TEXT_ENCODER,
        notes="the model of the I2P protocol (Schramowski et al.)",
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
        family="sdxl",
        height=1024,
        width=1024,
        guidance_scale=5.0,
        notes="the released SafeR-CLIP weights cover only the CLIP ViT-L/14 slot; train both with train/ (sdxl config)",
    ),
    "sd3": lambda: Preset(
        name="sd3",
        base="stabilityai/stable-diffusion-3.5-medium",
        safe_text_encoder=DEFAULT_SAFE_TEXT_ENCODER,
        family="sd3",
        height=1024,
        width=1024,
        num_inference_steps=40,
        guidance_scale=4.5,
        notes="gated on the Hub; the safe CLIP-L covers one of three encoders: T5 carries most of the conditioning",
    ),
    "flux": lambda: Preset(
        name="flux",
        base="black-forest-labs/FLUX.1-dev",
        safe_text_encoder=DEFAULT_SAFE_TEXT_ENCODER,
        family="flux",
        height=1024,
        width=1024,
        num_inference_steps=28,
        guidance_scale=3.5,
        notes="gated on the Hub; a CLIP-only swap covers the pooled vector only: T5 carries the token conditioning",
    ),
    "tiny": lambda: _tiny("sd"),
    "tiny-sdxl": lambda: _tiny("sdxl"),
    "tiny-sd3": lambda: _tiny("sd3"),
    "tiny-flux": lambda: _tiny("flux"),
}


def register_preset(name: str, factory: Callable[[], Preset]) -> None:
    """Add a preset (e.g. ``tiny-sd3`` where its tiny builder exists); a name already taken is refused."""
    if name in PRESETS:
        raise ValueError(f"preset {name!r} already exists")
    PRESETS[name] = factory


def get_preset(name: str, **overrides: Any) -> Preset:
    """The preset called ``name``, with fields overridden (``None`` values are ignored)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    preset = PRESETS[name]()
    unknown = set(overrides) - set(Preset.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown preset fields: {sorted(unknown)}")
    return replace(preset, **{k: v for k, v in overrides.items() if v is not None})


def load_preset_pipeline(
    preset: str | Preset, *, device: str | torch.device = "cpu", keep_original: bool = True, **kwargs: Any
):
    """Load the Safer pipeline of a preset on ``device`` (original encoder kept by default, for comparisons)."""
    preset = get_preset(preset) if isinstance(preset, str) else preset
    if "dtype" not in kwargs and "torch_dtype" not in kwargs:
        kwargs["dtype"] = preset.dtype_for(device)
    if preset.offline:
        kwargs.setdefault("local_files_only", True)
    pipe = preset.pipeline_class.from_pretrained(
        preset.base, **preset.safe_encoders(), keep_original=keep_original, **kwargs
    )
    return pipe.to(device)
