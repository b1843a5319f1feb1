"""``__init__`` and ``__call__`` built from the diffusers parent's signatures.

``safer_init(Parent, slots)`` and ``safer_call(Parent)`` build methods whose ``inspect.signature`` is the parent's
parameters in the parent's order followed by ours, so positional calls, diffusers' loaders (which read
``__init__``'s signature and type hints) and UIs that read ``__call__``'s signature all see the real parameters.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any

from .call_options import OUR_CALL_PARAMETERS

_P = inspect.Parameter
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
    :class:`SaferPipelineOutput`, or with ``return_dict=False`` the parent's tuple (``(images,)``, or
    ``(images, nsfw)`` with a safety checker) followed in compare mode by the same for the original images.
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
