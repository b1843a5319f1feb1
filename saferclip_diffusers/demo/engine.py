"""What the demo page runs, without any Gradio: one comparison per request.

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

from ..presets import Preset
from .indexing import CaptionIndex
from .interpret import CaptionInterpreter, load_captions
from .limits import Limits
from .loading import load_demo_pipeline, resolve_model
from .screen import NudityScreen, Screening


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
    captions_status: str = "off"  # "ready", "indexing n/N captions", "failed: ..." or "off" (no caption pool)

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
        interpreter: CaptionInterpreter | CaptionIndex | None = None,
        neighbours: int = 5,
        description: str = "",
        attack_steps: int = 0,
    ):
        """``attack_steps``: the swap-gcg budget of the page's "Try to break it" button (0: no button)."""
        if not pipe.has_original:
            raise ValueError(
                "the demo compares against the original encoder: load the pipeline with keep_original=True"
            )
        self.pipe = pipe
        self.limits = limits
        self.defaults = defaults
        self.screen = screen or NudityScreen()
        self.captions = (
            CaptionIndex.of(interpreter) if isinstance(interpreter, CaptionInterpreter) else interpreter
        )
        self.neighbours = neighbours
        self.description = description
        self.attack_steps = attack_steps
        self.attack_lock = threading.Lock()  # "Try to break it" runs on self.pipe, one attack at a time
        self._local = threading.local()

    @property
    def interpreter(self) -> CaptionInterpreter | None:
        """The caption interpreter once its index is ready (None while indexing, or with no caption pool)."""
        return self.captions.interpreter if self.captions is not None else None

    def captions_status(self) -> str:
        """``"off"`` without a caption pool, else the index's state (``"indexing n/N captions"``, ``"ready"``)."""
        return self.captions.status() if self.captions is not None else "off"

    def view(self):
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
        request = replace(
            request,
            seed=int(request.seed),
            steps=int(request.steps),
            height=int(request.height),
            width=int(request.width),
            num_images=int(request.num_images),
            guidance_scale=float(request.guidance_scale),
            safety_scale=float(request.safety_scale),
        )
        steps = request.steps

        def on_step(pipe, i, t, callback_kwargs):
            if progress is not None:
                progress(i + 1, steps, "denoising (original and safe, one batch)")
            return callback_kwargs

        generators = [torch.Generator("cpu").manual_seed(request.seed + i) for i in range(request.num_images)]
        out = self.view()(
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
        status = self.captions_status()
        interpreter = self.interpreter
        if interpreter is not None:
            if progress is not None:
                progress(steps, steps, "nearest captions")
            interpreted = interpreter.nearest(request.prompt, k=self.neighbours)
            status = "ready"
        return GenerationResult(
            request=request,
            original=SideResult(list(out.original_images), screenings[:n]),
            safe=SideResult(list(out.images), screenings[n:]),
            redirection_score=float(out.redirection_scores[0]),
            interpreted=interpreted,
            captions_status=status,
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
    background_index: bool = False,
    attack_steps: int = 0,
) -> DemoEngine:
    """Everything the demo needs, from command-line style arguments (``caption_pool_size=0``: no captions).

    ``background_index=True`` returns at once and embeds the caption pool in a background thread (the page shows
    "indexing n/N captions" until it is ready); otherwise the index is built before this returns."""
    preset = resolve_model(model)
    pipe = load_demo_pipeline(
        preset,
        safe_encoder=safe_encoder,
        safe_encoder_2=safe_encoder_2,
        device=device,
        dtype=dtype,
        sd_safety_checker=sd_safety_checker,
        allow_pickle=allow_pickle,
    )
    size = max(preset.height, preset.width)
    limits = Limits.for_size(size, max_size=max_size, max_steps=max_steps, max_images=max_images)
    defaults = GenerationRequest(
        prompt="",
        steps=min(max_steps, preset.num_inference_steps, 25),
        guidance_scale=preset.guidance_scale,
        height=preset.height,
        width=preset.width,
    )
    index = None
    if caption_pool_size:
        captions = load_captions(limit=caption_pool_size)
        if background_index:
            total = 2 * len(pipe.safe_slots or pipe._slots) * len(captions)
            index = CaptionIndex(
                lambda progress: CaptionInterpreter(pipe, captions, cache_dir, progress=progress), total=total
            )
        else:
            index = CaptionIndex.of(CaptionInterpreter(pipe, captions, cache_dir))
    return DemoEngine(
        pipe,
        limits=limits,
        defaults=defaults,
        screen=NudityScreen(nudenet_threshold),
        interpreter=index,
        description=describe(preset, pipe),
        attack_steps=attack_steps,
    )


def describe(preset: Preset, pipe) -> str:
    """Which models the page compares, in a sentence or two (with the preset's caveat, e.g. random weights)."""
    safe = ", ".join(
        f"{slot}: {getattr(pipe, slot).config._name_or_path or 'in memory'}" for slot in pipe.safe_slots
    )
    text = f"Base model `{preset.base}`; safe encoder(s) {safe or 'none (both sides use the base encoder)'}."
    return f"{text} Note: {preset.notes}." if preset.notes else text
