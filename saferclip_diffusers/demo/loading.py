"""Which pipeline the demo compares: ``--model`` (preset, hub id or directory) and ``--safe-encoder`` resolved and
loaded as a Safer pipeline with the original text encoder(s) kept, so UNet and VAE are shared by both sides."""

from __future__ import annotations

from dataclasses import replace

import torch

from ..devices import parse_dtype, resolve_device
from ..hub import ModelUnavailableError, explain_unavailable, is_local, require_local_dir
from ..presets import PRESETS, Preset, get_preset

OFFLINE_ALTERNATIVE = "--model tiny (random-weight tiny models, no download)"


def resolve_model(model: str) -> Preset:
    """A preset name (``sd15``, ``sdxl``, ``tiny``, ``tiny-sdxl``) or the hub id / directory of an SD 1.x/2.x or
    SDXL diffusers pipeline, as a :class:`Preset` giving the base and its default generation settings."""
    if model in PRESETS:
        return get_preset(model)
    from diffusers import DiffusionPipeline

    if is_local(model):
        require_local_dir(model, "--model pipeline")
    try:
        index = DiffusionPipeline.load_config(model)
    except OSError as err:
        if is_local(model):
            raise ValueError(
                f"--model {model!r} is not a diffusers pipeline folder (no model_index.json)"
            ) from err
        raise explain_unavailable(model, "base pipeline (--model)", err, OFFLINE_ALTERNATIVE) from err
    except Exception as err:  # noqa: BLE001 - re-raised with what to do
        raise ValueError(
            f"--model {model!r} is neither a preset ({', '.join(PRESETS)}) nor a loadable diffusers pipeline "
            f"(a hub id or a directory holding model_index.json): {err}"
        ) from err
    name = str(index.get("_class_name", ""))
    if "StableDiffusion" not in name or any(
        x in name for x in ("Img2Img", "Inpaint", "Upscale", "Depth", "3")
    ):
        raise ValueError(
            f"--model {model!r} holds a {name or 'unknown'} pipeline; the demo needs SD 1.x/2.x or SDXL "
            "text-to-image"
        )
    size = _native_size(model)
    base = get_preset("sdxl" if "XL" in name else "sd15")
    return replace(
        base, name=str(model), base=str(model), height=size or base.height, width=size or base.width
    )


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
        raise ValueError(
            "--safe-encoder-2 is for SDXL's second (bigG) text encoder; this model is SD 1.x/2.x"
        )
    return specs


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
    device = resolve_device(device or "auto")
    kwargs = {
        "torch_dtype": parse_dtype(dtype) or preset.dtype_for(device.type),
        "keep_original": True,
        "allow_pickle": allow_pickle,
    }
    if preset.offline:
        kwargs["local_files_only"] = True
    if not preset.sdxl and not sd_safety_checker:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    specs = encoder_specs(preset, safe_encoder, safe_encoder_2)
    try:
        pipe = preset.pipeline_class.from_pretrained(preset.base, **specs, **kwargs)
    except (
        OSError
    ) as err:  # the loaders' own ModelUnavailableError too: the demo names its flags and the tiny model
        raise unavailable(preset, specs, err) from err
    pipe.set_progress_bar_config(
        disable=True
    )  # the page shows progress; parallel console bars would interleave
    return pipe.to(device)


def unavailable(preset: Preset, specs: dict, err: OSError) -> ModelUnavailableError:
    """Which of the models could not be had (the base or a safe encoder named in the error), why, and the
    offline alternative."""
    text = " ".join(str(e) for e in (err, err.__cause__, err.__context__) if e is not None)
    for slot, spec in specs.items():
        if isinstance(spec, str) and spec and spec in text and spec != preset.base:
            what = (
                "safe text encoder (--safe-encoder)" if slot == "safe_text_encoder" else "safe text encoder 2"
            )
            return explain_unavailable(spec, what, err, OFFLINE_ALTERNATIVE)
    return explain_unavailable(preset.base, "base pipeline (--model)", err, OFFLINE_ALTERNATIVE)
