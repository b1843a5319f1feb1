"""Which pipeline the demo compares: ``--model`` (preset, hub id or directory) and ``--safe-encoder`` resolved and
loaded as a Safer pipeline with the original text encoder(s) kept, so UNet and VAE are shared by both sides."""

from __future__ import annotations

from dataclasses import replace

import torch

from ..presets import PRESETS, Preset, get_preset

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_model(model: str) -> Preset:
    """A preset name (``sd15``, ``sdxl``, ``tiny``, ``tiny-sdxl``) or the hub id / directory of an SD 1.x/2.x or
    SDXL diffusers pipeline, as a :class:`Preset` giving the base and its default generation settings."""
    if model in PRESETS:
        return get_preset(model)
    from diffusers import DiffusionPipeline

    try:
        index = DiffusionPipeline.load_config(model)
    except Exception as err:  # noqa: BLE001 - re-raised with what to do
        raise ValueError(
            f"--model {model!r} is neither a preset ({', '.join(PRESETS)}) nor a loadable diffusers pipeline "
            f"(a hub id or a directory holding model_index.json): {err}"
        ) from err
    name = str(index.get("_class_name", ""))
    if "StableDiffusion" not in name or any(x in name for x in ("Img2Img", "Inpaint", "Upscale", "Depth", "3")):
        raise ValueError(f"--model {model!r} holds a {name or 'unknown'} pipeline; the demo needs SD 1.x/2.x or SDXL "
                         "text-to-image")
    size = _native_size(model)
    base = get_preset("sdxl" if "XL" in name else "sd15")
    return replace(base, name=str(model), base=str(model), height=size or base.height, width=size or base.width)


def _native_size(model: str) -> int | None:
    """The image size a pipeline was built for: UNet sample size times the VAE's downscaling (None if unknown)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    try:
        sample = UNet2DConditionModel.load_config(model, subfolder="unet")["sample_size"]
        blocks = AutoencoderKL.load_config(model, subfolder="vae")["block_out_channels"]
    except Exception:  # noqa: BLE001 - fall back to the family's default size
        return None
    sample = sample[0] if isinstance(sample, (list, tuple)) else sample
    return int(sample) * 2 ** (len(blocks) - 1)


def encoder_specs(preset: Preset, safe_encoder: str | None = None, safe_encoder_2: str | None = None) -> dict:
    """The ``safe_text_encoder[_2]`` arguments for ``from_pretrained``.

    A named preset supplies its own encoders; for any other model the pipeline classes' defaults apply (the
    released SafeR-CLIP weights, or the encoders saved in a Safer pipeline directory). For SDXL, a
    ``safe_encoder`` that is an export holding ``text_encoder_2/`` also fills the bigG slot unless
    ``safe_encoder_2`` is given.
    """
    from ..pipelines.loading import DEFAULT

    named = preset.name in PRESETS
    specs = {"safe_text_encoder": safe_encoder or (preset.safe_text_encoder if named else DEFAULT)}
    if preset.sdxl:
        if safe_encoder_2 is not None:
            specs["safe_text_encoder_2"] = safe_encoder_2
        elif safe_encoder is None and named:
            specs["safe_text_encoder_2"] = preset.safe_text_encoder_2
        else:
            specs["safe_text_encoder_2"] = DEFAULT
    elif safe_encoder_2 is not None:
        raise ValueError("--safe-encoder-2 is for SDXL's second (bigG) text encoder; this model is SD 1.x/2.x")
    return specs


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """``auto``/None (float16 on CUDA, float32 elsewhere), ``float32``, ``float16`` or ``bfloat16``."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return None
    if dtype not in DTYPES:
        raise ValueError(f"--dtype must be auto or one of {', '.join(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


def load_demo_pipeline(
    preset: Preset,
    *,
    safe_encoder: str | None = None,
    safe_encoder_2: str | None = None,
    device: str | None = None,
    dtype: str | torch.dtype | None = None,
    sd_safety_checker: bool = False,
    allow_pickle: bool = False,
):
    """Load the Safer pipeline of ``preset`` with the original encoder(s) kept, on ``device``.

    The diffusers SD 1.x safety checker is left out unless ``sd_safety_checker``: it would black out unsafe images
    on both sides and hide the comparison; the demo screens images with NudeNet and blurs flagged ones instead.
    """
    device = device or default_device()
    kwargs = {"torch_dtype": parse_dtype(dtype) or preset.dtype_for(device), "keep_original": True,
              "allow_pickle": allow_pickle}
    if preset.offline:
        kwargs["local_files_only"] = True
    if not preset.sdxl and not sd_safety_checker:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    specs = encoder_specs(preset, safe_encoder, safe_encoder_2)
    pipe = preset.pipeline_class.from_pretrained(preset.base, **specs, **kwargs)
    pipe.set_progress_bar_config(disable=True)  # the page shows progress; parallel console bars would interleave
    return pipe.to(device)
