"""State-dict key layouts of CLIP text encoders, and a weight load that proves every tensor arrived.

Text encoders reach us in several key layouts:

- nested ``text_model.*`` (transformers < 5.6, ``CLIPTextModelWithProjection``, ``CLIPModel``, ``save_pretrained``
  output, DES/SAGE ``.pt`` files, the standalone single files of ComfyUI / A1111 / Forge / stable-diffusion.cpp);
- flat ``embeddings.*`` / ``encoder.*`` / ``final_layer_norm.*`` (``CLIPTextModel.state_dict()`` in
  transformers >= 5.6);
- either of those under an outer prefix (``cond_stage_model.transformer.``, ``text_encoders.clip_l.transformer.``,
  ``module.`` ...);
- OpenCLIP (``transformer.resblocks.*``, optionally under ``model.``), converted by :mod:`.openclip`.

:func:`canonical_clip_state_dict` maps all of them to the nested layout; :func:`to_module_layout` maps the
nested layout to whatever the target module's own ``state_dict()`` uses. :func:`load_exact` refuses a load
that would leave any weight of the target at its initial value: ``load_state_dict(strict=False)`` with a key
layout the module does not use loads nothing and says nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import torch

from .errors import IncompatibleEncoderError
from .openclip import is_openclip_state_dict, openclip_to_hf

_ANCHOR = re.compile(r"^(?P<outer>.*?)(?P<nested>text_model\.)?embeddings\.token_embedding\.weight$")
_TEXT_PARTS = ("embeddings.", "encoder.", "final_layer_norm.")
# keys that a text encoder may meet in a checkpoint and skip without loss (CLIPModel's vision half, buffers)
_FOREIGN = re.compile(r"^(vision_model\.|visual_projection\.|logit_scale$|logit_bias$)")
PROJECTION_KEY = "text_projection.weight"


def is_ignorable(key: str) -> bool:
    """Keys that carry no learned weight of a text encoder (position ids) or belong to CLIP's vision half."""
    return key.endswith("position_ids") or bool(_FOREIGN.match(key))


def _show(keys: Iterable[str], limit: int = 6) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def clip_prefixes(state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """The outer prefixes under which ``state_dict`` holds a CLIP text encoder ('' for a bare encoder)."""
    return sorted({m["outer"] for k in state_dict if (m := _ANCHOR.match(k))})


def canonical_clip_state_dict(
    state_dict: Mapping[str, torch.Tensor], *, source: str, prefix: str | None = None
) -> dict[str, torch.Tensor]:
    """The CLIP text encoder in ``state_dict`` with nested keys: ``text_model.*`` and ``text_projection.weight``.

    ``prefix`` picks one encoder out of a checkpoint holding several (e.g. an SDXL all-in-one file); keys outside
    it are then ignored. Without it, a key that is neither text-encoder weight nor ignorable is an error.
    """
    if is_openclip_state_dict(state_dict):
        state_dict = openclip_to_hf(state_dict)
    prefixes = clip_prefixes(state_dict)
    if prefix is None:
        if not prefixes:
            raise IncompatibleEncoderError(
                f"{source} holds no CLIP text encoder: no key ends in 'embeddings.token_embedding.weight' "
                f"(its keys start with: {_show(state_dict)})"
            )
        if len(prefixes) > 1:
            raise IncompatibleEncoderError(
                f"{source} holds several CLIP text encoders, under the prefixes {prefixes}; pass prefix= to pick one"
            )
        prefix, strict_outside = prefixes[0], True
    else:
        if prefix not in prefixes:
            raise IncompatibleEncoderError(
                f"{source} has no CLIP text encoder under prefix {prefix!r}; found {prefixes}"
            )
        strict_outside = False
    out: dict[str, torch.Tensor] = {}
    stray = []
    for key, value in state_dict.items():
        rest = key[len(prefix) :] if key.startswith(prefix) else None
        if rest is None:
            if strict_outside and not is_ignorable(key):
                stray.append(key)
            continue
        if rest.endswith("position_ids"):
            continue
        if rest.startswith("text_model.") or rest == PROJECTION_KEY:
            out[rest] = value
        elif rest.startswith(_TEXT_PARTS):
            out["text_model." + rest] = value
        elif not is_ignorable(rest):
            stray.append(key)
    if stray:
        raise IncompatibleEncoderError(
            f"{source} has keys that belong to no CLIP text encoder: {_show(stray)}"
        )
    return out


def to_module_layout(
    canonical: Mapping[str, torch.Tensor], module: torch.nn.Module
) -> dict[str, torch.Tensor]:
    """Nested keys -> the layout of ``module.state_dict()`` (flat for transformers >= 5.6 ``CLIPTextModel``)."""
    if hasattr(module, "text_model"):
        return dict(canonical)
    return {
        (k.removeprefix("text_model.") if k.startswith("text_model.") else k): v for k, v in canonical.items()
    }


def to_nested_layout(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A CLIP text encoder's own ``state_dict()`` (flat or nested) in the nested single-file layout."""
    return canonical_clip_state_dict(state_dict, source="the encoder")


def tied_groups(module: torch.nn.Module) -> list[set[str]]:
    groups: dict[tuple, set[str]] = {}
    for key, value in module.state_dict(keep_vars=True).items():
        if value.device.type != "meta" and value.numel():
            groups.setdefault(
                (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape)), set()
            ).add(key)
    return [g for g in groups.values() if len(g) > 1]


def load_exact(
    module: torch.nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    source: str,
    optional: Iterable[str] = (),
) -> None:
    """Copy ``state_dict`` into ``module``, raising unless every weight of ``module`` is covered.

    Key sets are compared after the caller's normalisation: a missing key (other than position ids, tied
    duplicates and ``optional``), an unexpected key or a shape mismatch raises
    :class:`IncompatibleEncoderError` naming the keys. ``text_projection.weight`` is dropped when ``module`` has
    no projection (a ``CLIPModel``'s projection is not part of a plain text tower).
    """
    target = {k: v for k, v in module.state_dict().items() if not k.endswith("position_ids")}
    given = {k: v for k, v in state_dict.items() if not k.endswith("position_ids")}
    if PROJECTION_KEY not in target:
        given.pop(PROJECTION_KEY, None)
    optional = set(optional)
    for group in tied_groups(module):
        if group & set(given):
            optional |= group
    tied = getattr(
        module, "_tied_weights_keys", None
    )  # transformers: {tied copy: source}, e.g. T5's embeddings
    if isinstance(tied, dict):
        optional |= {
            copy for copy, src in tied.items() if copy in target and copy not in given and src in given
        }
    missing = set(target) - set(given) - optional
    unexpected = set(given) - set(target)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} weights of the model are missing from it: {_show(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} of its keys match nothing in the model: {_show(unexpected)}")
        raise IncompatibleEncoderError(
            f"{source} does not fit {type(module).__name__}: "
            + "; ".join(parts)
            + ". Nothing was loaded (a partial load would leave random weights in place)."
        )
    wrong = [
        f"{k} {tuple(given[k].shape)} vs {tuple(v.shape)}"
        for k, v in target.items()
        if k in given and given[k].shape != v.shape
    ]
    if wrong:
        raise IncompatibleEncoderError(
            f"{source} does not fit {type(module).__name__}: shapes differ (file vs model) for {_show(wrong, 4)}"
        )
    result = module.load_state_dict(given, strict=False)
    if hasattr(module, "tie_weights"):
        module.tie_weights()  # a model built without init is untied until told
    left = [k for k in result.missing_keys if not k.endswith("position_ids") and k not in optional]
    if left or result.unexpected_keys:
        raise IncompatibleEncoderError(
            f"{source}: load_state_dict left {_show(left)} unloaded and {_show(result.unexpected_keys)} unused"
        )
