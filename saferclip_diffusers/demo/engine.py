"""What the demo page runs, without any Gradio: load the Safer pipeline, then generate one comparison.

One request gives, from identical initial latents and with one shared UNet and VAE, the original model's and
the safe model's images (the pipeline's compare mode), NudeNet's verdict on each, the prompt's redirection score
and, when a caption pool is loaded, the captions nearest to the prompt on each side.
"""

from __future__ import annotations

import copy
import os
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import PIL.Image
import torch

from ..presets import PRESETS, Preset, get_preset
from .interpret import CaptionInterpreter
from .limits import Limits
from .screen import NudityScreen, Screening

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


@dataclass(frozen=True)
class GenerationRequest:
    """One click of Generate."""

    prompt: str
    negative_prompt: str = ""
    seed: int = 0
    steps: int = 25
    guidance_scale: float = 7.5
    height: int = 512
    width: int = 512
    num_images: int = 1
    safety_scale: float = 1.0


@dataclass
class SideResult:
    """The images of one side (original or safe) and NudeNet's verdict on each."""

    images: list[PIL.Image.Image]
    screenings: list[Screening]


@dataclass
class GenerationResult:
    request: GenerationRequest
    original: SideResult
    safe: SideResult
    redirection_score: float
    interpreted: dict[str, list[tuple[str, float]]] | None

    @property
    def seeds(self) -> list[int]:
        return [self.request.seed + i for i in range(self.request.num_images)]


ProgressFn = Callable[[int, int, str], None]


class DemoEngine:
    """Runs comparisons on a Safer pipeline; safe to call from several threads at once."""

    def __init__(
        self,
        pipe,
        *,
        limits: Limits,
        defaults: GenerationRequest,
        screen: NudityScreen | None = None,
        interpreter: CaptionInterpreter | None = None,
        neighbours: int = 5,
        description: str = "",
    ):
        if not pipe.has_original:
            raise ValueError("the demo compares against the original encoder: load the pipeline with keep_original=True")
        self.pipe = pipe
        self.limits = limits
        self.defaults = defaults
        self.screen = screen or NudityScreen()
        self.interpreter = interpreter
        self.neighbours = neighbours
        self.description = description
        self._local = threading.local()

    def _view(self):
        """A shallow copy of the pipeline with its own scheduler, tokenizers and call state; models are shared.

        diffusers keeps per-call state on the pipeline (timesteps in the scheduler, guidance scale, ...) and fast
        tokenizers switch their padding mode in place on every call, so concurrent calls on one object would
        interfere. Tokenizer copies are made once per worker thread.
        """
        view = copy.copy(self.pipe)
        view.scheduler = self.pipe.scheduler.from_config(self.pipe.scheduler.config)
        names = [tok for _, tok in self.pipe._slots]
        if getattr(self._local, "tokenizers", None) is None:
            self._local.tokenizers = {name: copy.deepcopy(getattr(self.pipe, name)) for name in names}
        for name, tokenizer in self._local.tokenizers.items():
            setattr(view, name, tokenizer)
        return view

    def generate(self, request: GenerationRequest, progress: ProgressFn | None = None) -> GenerationResult:
        """Check ``request`` against the limits (:class:`~.limits.InputError`), then generate both sides."""
        self.limits.check(**asdict(request))
        request = replace(request, seed=int(request.seed), steps=int(request.steps), height=int(request.height),
                          width=int(request.width), num_images=int(request.num_images),
                          guidance_scale=float(request.guidance_scale), safety_scale=float(request.safety_scale))
        steps = request.steps

        def on_step(pipe, i, t, callback_kwargs):
            if progress is not None:
                progress(i + 1, steps, "denoising (original and safe, one batch)")
            return callback_kwargs

        generators = [torch.Generator("cpu").manual_seed(request.seed + i) for i in range(request.num_images)]
        out = self._view()(
            request.prompt,
            negative_prompt=request.negative_prompt or None,
            num_inference_steps=steps,
            guidance_scale=request.guidance_scale,
            height=request.height,
            width=request.width,
            num_images_per_prompt=request.num_images,
            generator=generators,
            safety_scale=request.safety_scale,
            return_original=True,
            callback_on_step_end=on_step,
        )
        if progress is not None:
            progress(steps, steps, "NudeNet screening")
        screenings = self.screen(list(out.original_images) + list(out.images))
        n = len(out.images)
        interpreted = None
        if self.interpreter is not None:
            if progress is not None:
                progress(steps, steps, "nearest captions")
            interpreted = self.interpreter.nearest(request.prompt, k=self.neighbours)
        return GenerationResult(
            request=request,
            original=SideResult(list(out.original_images), screenings[:n]),
            safe=SideResult(list(out.images), screenings[n:]),
            redirection_score=float(out.redirection_scores[0]),
            interpreted=interpreted,
        )


def build_engine(
    model: str = "tiny",
    *,
    safe_encoder: str | None = None,
    safe_encoder_2: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    caption_pool_size: int = 5000,
    cache_dir: str | os.PathLike | None = None,
    nudenet_threshold: float = 0.6,
    max_size: int | None = None,
    max_steps: int = 50,
    max_images: int = 4,
    sd_safety_checker: bool = False,
    allow_pickle: bool = False,
) -> DemoEngine:
    """Everything the demo needs, from command-line style arguments (``caption_pool_size=0``: no captions)."""
    from .interpret import load_captions

    preset = resolve_model(model)
    pipe = load_demo_pipeline(preset, safe_encoder=safe_encoder, safe_encoder_2=safe_encoder_2, device=device,
                              dtype=dtype, sd_safety_checker=sd_safety_checker, allow_pickle=allow_pickle)
    size = max(preset.height, preset.width)
    limits = Limits.for_size(size, max_size=max_size, max_steps=max_steps, max_images=max_images)
    defaults = GenerationRequest(
        prompt="",
        steps=min(max_steps, 25 if preset.num_inference_steps > 25 else preset.num_inference_steps),
        guidance_scale=preset.guidance_scale,
        height=preset.height,
        width=preset.width,
    )
    interpreter = None
    if caption_pool_size:
        interpreter = CaptionInterpreter(pipe, load_captions(limit=caption_pool_size), cache_dir)
    return DemoEngine(pipe, limits=limits, defaults=defaults, screen=NudityScreen(nudenet_threshold),
                      interpreter=interpreter, description=describe(preset, pipe))


def describe(preset: Preset, pipe) -> str:
    """Which models the page compares, in a sentence or two (with the preset's caveat, e.g. random weights)."""
    safe = ", ".join(f"{slot}: {getattr(pipe, slot).config._name_or_path or 'in memory'}" for slot in pipe.safe_slots)
    text = f"Base model `{preset.base}`; safe encoder(s) {safe or 'none (both sides use the base encoder)'}."
    return f"{text} Note: {preset.notes}." if preset.notes else text
