"""``__init__`` and ``__call__`` of every Safer pipeline: the parent's signature plus ours, compare mode, one lock.

``safer_init(Parent, slots)`` and ``safer_call(Parent)`` build methods whose ``inspect.signature`` is the parent's
parameters in the parent's order followed by ours, so positional calls, diffusers' loaders (which read
``__init__``'s signature) and UIs that read ``__call__``'s signature all see the real parameters.

Compare mode (``return_original=True``) runs the original encoders from the same noise:

* ``compare_in_one_batch=True`` (text-to-image only): one denoiser batch ``[safe | original]`` from the same
  initial latents, drawn once from the generator exactly as the parent draws them. A step callback then sees
  latents of ``2 * B`` rows: rows ``[:B]`` safe, rows ``[B:]`` original. With a stochastic (ancestral) sampler the
  per-step noise is drawn for ``2 * B`` rows, so the original half differs from a plain run.
* ``compare_in_one_batch=False`` (and always for img2img / inpainting, where the parent encodes the image with the
  generator before it draws the noise): two parent calls, the generator state (or torch's global RNG when no
  generator is given) restored in between. Each branch then equals a plain run from the same generator, bit for
  bit, with every sampler. A step callback is called once per step for the safe run, then once per step for the
  original run.

Threads: ``__call__`` holds a per-pipeline ``threading.RLock``, so two threads calling one pipeline run one after
the other instead of racing on the scheduler's state and the encode hook. Components shared with *other*
pipeline objects (``from_pipe``) are not covered: use one pipeline object per thread, or call them from one.
"""

from __future__ import annotations

import inspect
import threading
import typing
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor

from .conditioning import NEGATIVE_ARGS, NEGATIVE_ENCODERS, PROMPT_ARGS, CallState, SaferPipelineOutput, given

_P = inspect.Parameter
OUR_CALL_PARAMETERS = (
    _P("safety_scale", _P.KEYWORD_ONLY, default=1.0, annotation="float"),
    _P("return_original", _P.KEYWORD_ONLY, default=False, annotation="bool"),
    _P("compare_in_one_batch", _P.KEYWORD_ONLY, default=True, annotation="bool"),
    _P("negative_prompt_encoder", _P.KEYWORD_ONLY, default="original", annotation="str"),
)
_CALL_DOC = """
Safer arguments (after the parent's, keyword only):
    safety_scale (`float`, defaults to 1.0): conditioning interpolated between the original encoders (0) and the
        safe ones (1). 0 reproduces the plain diffusers pipeline exactly (same generator, same images).
    return_original (`bool`, defaults to False): also generate with the original encoders from the same noise;
        the output carries ``original_images``.
    compare_in_one_batch (`bool`, defaults to True): compare mode in one denoiser batch (text-to-image only;
        exact for deterministic samplers) or, with False, two runs with the generator state restored (exact for
        every sampler). See :mod:`saferclip_diffusers.pipelines.calling` for the callback batch layout.
    negative_prompt_encoder (`"original"` or `"safe"`, defaults to "original"): which encoder reads a negative
        prompt you write. The safe encoder redirects "nudity, gore" towards a safe meaning, which would weaken
        negative prompting, so the original encoder reads it (the safe one when no original encoder is loaded,
        with a warning). The unconditional branch always follows the positive prompt's encoder.

Returns:
    :class:`SaferPipelineOutput`, or with ``return_dict=False`` the tuple ``(images, nsfw[, original_images,
    original_nsfw])``.
"""


def _with_ours(parent_sig: inspect.Signature, ours: list[inspect.Parameter]) -> inspect.Signature:
    params = list(parent_sig.parameters.values())
    var_kw = [p for p in params if p.kind is _P.VAR_KEYWORD]
    return parent_sig.replace(parameters=[p for p in params if p.kind is not _P.VAR_KEYWORD] + ours + var_kw)


def safer_init(parent: type, slots: tuple[str, ...]):
    """An ``__init__`` taking the parent's arguments plus ``original_<slot>`` and ``safe_text_encoder_slots``."""
    parent_sig = inspect.signature(parent.__init__)
    ours = [
        _P(
            f"original_{slot}",
            _P.KEYWORD_ONLY,
            default=None,
            annotation=parent_sig.parameters[slot].annotation,
        )
        for slot in slots
    ]
    ours.append(_P("safe_text_encoder_slots", _P.KEYWORD_ONLY, default=None, annotation="list[str] | None"))
    signature = _with_ours(parent_sig, ours)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        originals = {f"original_{slot}": kwargs.pop(f"original_{slot}", None) for slot in slots}
        safe_slots = kwargs.pop("safe_text_encoder_slots", None)
        parent.__init__(self, *args, **kwargs)
        self.register_modules(**originals)
        self.register_to_config(safe_text_encoder_slots=list(safe_slots or []))
        self._safer_lock = threading.RLock()

    __init__.__signature__ = signature
    __init__.__annotations__ = _annotations(
        parent.__init__,
        {
            **{f"original_{slot}": _hints(parent.__init__).get(slot) for slot in slots},
            "safe_text_encoder_slots": list[str] | None,
        },
    )
    __init__.__doc__ = f"The arguments of :class:`diffusers.{parent.__name__}` plus the original encoders."
    return __init__


def safer_call(parent: type):
    """A ``__call__`` with the parent's documented parameters in the parent's order, then ours."""
    signature = _with_ours(inspect.signature(parent.__call__), list(OUR_CALL_PARAMETERS))
    var_kw = next((p.name for p in signature.parameters.values() if p.kind is _P.VAR_KEYWORD), None)
    ours = {p.name: p.default for p in OUR_CALL_PARAMETERS}

    def __call__(self, *args: Any, **kwargs: Any):
        arguments = dict(signature.bind(self, *args, **kwargs).arguments)
        arguments.pop("self")
        extra = arguments.pop(var_kw, {}) if var_kw else {}
        options = {name: arguments.pop(name, default) for name, default in ours.items()}
        return self._safer_call({**arguments, **extra}, **options)

    __call__.__signature__ = signature
    __call__.__annotations__ = _annotations(
        parent.__call__, {p.name: eval(p.annotation) for p in OUR_CALL_PARAMETERS}
    )
    __call__.__doc__ = (parent.__call__.__doc__ or "") + _CALL_DOC
    return __call__


def _hints(function) -> dict[str, Any]:
    try:
        return typing.get_type_hints(function)
    except Exception:  # unresolvable names in the parent's annotations: fall back to the raw ones
        return dict(getattr(function, "__annotations__", {}))


def _annotations(function, ours: dict[str, Any]) -> dict[str, Any]:
    """The parent's resolved annotations plus ours (diffusers reads ``get_type_hints(cls.__init__)``)."""
    hints = {k: v for k, v in _hints(function).items() if k != "return"}
    return {**hints, **{k: v for k, v in ours.items() if v is not None}}


class SaferCallMixin:
    """Runs the parent's ``__call__`` under the encode hook; compare mode; the lock."""

    _one_batch_compare = True  # False where the parent draws noise after encoding an input image

    @property
    def components(self) -> dict[str, Any]:
        """The parent's components; ``original_<slot>`` only when loaded, so ``Other(**pipe.components)`` works."""
        return {k: v for k, v in super().components.items() if not (k.startswith("original_") and v is None)}

    def _safer_call(
        self,
        kwargs: dict,
        safety_scale: float,
        return_original: bool,
        compare_in_one_batch: bool,
        negative_prompt_encoder: str,
    ):
        lock = self.__dict__.setdefault("_safer_lock", threading.RLock())
        with lock, torch.no_grad():
            return self._locked_call(
                kwargs, float(safety_scale), return_original, compare_in_one_batch, negative_prompt_encoder
            )

    def _locked_call(
        self, kwargs, safety_scale, return_original, compare_in_one_batch, negative_prompt_encoder
    ):
        if not 0.0 <= safety_scale <= 1.0:
            raise ValueError(
                f"safety_scale must lie in [0, 1] (0 = original encoder, 1 = safe encoder), got {safety_scale}"
            )
        if negative_prompt_encoder not in NEGATIVE_ENCODERS:
            raise ValueError(
                f"negative_prompt_encoder must be 'original' or 'safe', got {negative_prompt_encoder!r}"
            )
        return_dict = kwargs.pop("return_dict", True)
        need_original = safety_scale != 1.0 or return_original
        if need_original and not self.has_original:
            raise ValueError(
                f"safety_scale={safety_scale} / return_original={return_original} need the original text encoder(s), "
                "which this pipeline did not keep: load it with keep_original=True (or build it with from_pipe)."
            )
        if kwargs.get("prompt_embeds") is not None and need_original:
            raise ValueError("safety_scale < 1 and return_original need the prompt text, not prompt_embeds")
        if (
            negative_prompt_encoder == "original"
            and not self.has_original
            and any(given(kwargs.get(n)) for n in NEGATIVE_ARGS)
        ):
            self._warn_negative_fallback()
            negative_prompt_encoder = "safe"
        prompt = kwargs.get("prompt")
        scores = self.redirection_scores(prompt) if prompt is not None and self.has_original else None
        state = CallState(safety_scale, negative_prompt_encoder)
        if not return_original:
            return self._finish(self._run(kwargs, state), None, scores, return_dict)
        if compare_in_one_batch and self._one_batch_compare and not _uses_ip_adapter(kwargs):
            safe, original = self._compare_one_batch(kwargs, state)
        else:
            rng = _RngState(kwargs.get("generator"), self._execution_device)
            safe = self._run(kwargs, state)
            rng.restore()
            original = self._run(kwargs, CallState(0.0, "original"))
        return self._finish(safe, original, scores, return_dict)

    def _run(self, kwargs: dict, state: CallState):
        latents = kwargs.get("latents")
        call = {**kwargs, "latents": latents.clone()} if isinstance(latents, torch.Tensor) else kwargs
        self._safer_state = state
        try:
            return super().__call__(**call, return_dict=True)
        finally:
            self._safer_state = None

    # ------------------------------------------------------------------ one-batch compare

    def _compare_one_batch(self, kwargs: dict, state: CallState):
        prompt = kwargs.get("prompt")
        prompts = [prompt] if isinstance(prompt, str) else list(prompt or [])
        if not prompts:
            raise ValueError("give a prompt (a string or a list of strings)")
        n = len(prompts) * (kwargs.get("num_images_per_prompt") or 1)
        doubled = dict(kwargs, prompt=prompts + prompts)
        for name in PROMPT_ARGS[1:] + NEGATIVE_ARGS:
            value = kwargs.get(name)
            if isinstance(value, str) and (value or name in NEGATIVE_ARGS):
                value = [value] * len(
                    prompts
                )  # diffusers wants a list beside a list prompt ("" for prompt_2 = unset)
            if isinstance(value, list):
                doubled[name] = value + value
        generator = kwargs.get("generator")
        if isinstance(generator, list) and len(generator) != n:
            raise ValueError(f"{len(generator)} generators given for an effective batch of {n} images")
        latents = kwargs.get("latents")
        if latents is None:
            latents = self._initial_noise(n, kwargs)
        doubled["latents"] = torch.cat([latents, latents])
        if isinstance(generator, list):
            doubled["generator"] = generator + generator
        self._double_inputs(kwargs, doubled)
        out = self._run(doubled, CallState(state.safety_scale, state.negative_prompt_encoder, split=True))
        nsfw = getattr(out, "nsfw_content_detected", None)
        safe = SaferPipelineOutput(images=out.images[:n], nsfw_content_detected=nsfw[:n] if nsfw else None)
        original = SaferPipelineOutput(
            images=out.images[n:], nsfw_content_detected=nsfw[n:] if nsfw else None
        )
        return safe, original

    def _double_inputs(self, kwargs: dict, doubled: dict) -> None:
        """Double per-image inputs other than prompts (ControlNet condition images); none for text-to-image."""

    def _default_size(self, kwargs: dict) -> tuple[int, int]:
        default = self.unet.config.sample_size * self.vae_scale_factor
        return kwargs.get("height") or default, kwargs.get("width") or default

    def _initial_noise(self, batch: int, kwargs: dict) -> torch.Tensor:
        """The noise the parent would draw from the same generator (before scaling by ``init_noise_sigma``)."""
        height, width = self._default_size(kwargs)
        shape = (
            batch,
            self.unet.config.in_channels,
            int(height) // self.vae_scale_factor,
            int(width) // self.vae_scale_factor,
        )
        encoder = getattr(self, "text_encoder", None) or self.text_encoder_2
        return randn_tensor(
            shape, generator=kwargs.get("generator"), device=self._execution_device, dtype=encoder.dtype
        )

    def _finish(self, out, out_orig, scores, return_dict: bool):
        result = SaferPipelineOutput(
            images=out.images,
            nsfw_content_detected=getattr(out, "nsfw_content_detected", None),
            original_images=out_orig.images if out_orig is not None else None,
            original_nsfw_content_detected=getattr(out_orig, "nsfw_content_detected", None)
            if out_orig
            else None,
            redirection_scores=scores,
        )
        if return_dict:
            return result
        items = (result.images, result.nsfw_content_detected)
        if out_orig is not None:
            items += (result.original_images, result.original_nsfw_content_detected)
        return items


def _uses_ip_adapter(kwargs: dict) -> bool:
    return kwargs.get("ip_adapter_image") is not None or kwargs.get("ip_adapter_image_embeds") is not None


class _RngState:
    """Snapshot of the generator(s) a call will draw from, to replay the same draws in a second call."""

    def __init__(self, generator, device: torch.device):
        self.generators = (
            generator if isinstance(generator, list) else [generator] if generator is not None else []
        )
        self.states = [g.get_state() for g in self.generators]
        self.cpu = torch.get_rng_state() if not self.generators else None
        self.cuda = (
            torch.cuda.get_rng_state_all()
            if not self.generators and torch.device(device).type == "cuda"
            else None
        )

    def restore(self) -> None:
        for g, s in zip(self.generators, self.states, strict=True):
            g.set_state(s)
        if self.cpu is not None:
            torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)
