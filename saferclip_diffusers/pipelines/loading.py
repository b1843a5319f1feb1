"""The steps every Safer loader shares (SD/SDXL in :mod:`.sd_loading`, SD3/FLUX in :mod:`.mmdit_loading`): the
``DEFAULT`` marker, reading the base pipeline's index, resolving default safe-encoder specs, dtype names, and
loading or requiring the original encoders."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..devices import parse_dtype
from ..encoders import has_slot
from ..hub import explain_unavailable, is_local, require_local_dir


class _Default:
    """Marker for "use the default safe encoder of this slot"."""

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT = _Default()


def _export_holds(spec: Any, slot: str, kind: str) -> bool:
    """Whether ``spec`` is a diffusers-layout export whose ``slot`` folder holds an encoder of ``kind``
    (``clip`` or ``t5``)."""
    if spec is DEFAULT or spec is None or not isinstance(spec, (str, os.PathLike)):
        return False
    config = Path(spec).expanduser() / slot / "config.json"
    if config.is_file():
        return (json.loads(config.read_text()).get("model_type") == "t5") == (kind == "t5")
    return not Path(spec).expanduser().exists() and has_slot(spec, slot)


def resolve_specs(cls, specs: dict[str, Any], saved_safe_slots: list[str] | None) -> dict[str, Any]:
    """Replace DEFAULT markers: a saved Safer pipeline keeps its own safe encoders; otherwise the class default
    for ``text_encoder``, and for every other slot the first spec when it is a diffusers-layout export that also
    holds this slot with the right kind of encoder (an SDXL export fills both SDXL slots)."""
    first = specs.get("text_encoder")
    kinds = {entry[0]: entry[2] if len(entry) > 2 else "clip" for entry in cls._slots}
    resolved = {}
    for slot, spec in specs.items():
        if spec is DEFAULT:
            if saved_safe_slots is not None:
                spec = None
            elif slot != "text_encoder":
                spec = first if _export_holds(first, slot, kinds[slot]) else None
            else:
                spec = cls._default_safe_encoders.get(slot)
        resolved[slot] = spec
    return resolved


def normalise_dtype(kwargs: dict[str, Any], default: Any = None) -> Any:
    """Accept ``dtype`` (diffusers >= 0.42, transformers 5) and the deprecated ``torch_dtype``; store ``dtype``."""
    dtype, torch_dtype = kwargs.pop("dtype", None), kwargs.pop("torch_dtype", None)
    if dtype is not None and torch_dtype is not None:
        raise ValueError("pass dtype (or the deprecated torch_dtype), not both")
    dtype = dtype if dtype is not None else torch_dtype if torch_dtype is not None else default
    if isinstance(
        dtype, str
    ):  # "float16", "bf16", "auto" (= the modules' own dtype), as on the command lines
        dtype = parse_dtype(dtype)
    if dtype is not None:
        kwargs["dtype"] = dtype
    return dtype


def read_base_index(cls, base: str | os.PathLike, hub: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The base pipeline's location and ``model_index.json``; a clear error when it is not a pipeline folder or
    cannot be had (a path that does not exist is a missing folder, never a Hub error)."""
    if not isinstance(base, (str, os.PathLike)):
        raise TypeError(f"base must be a hub id or a directory, got {type(base).__name__}")
    if is_local(base):
        base = str(require_local_dir(base, "base pipeline"))
        if not os.path.isfile(os.path.join(base, "model_index.json")):
            raise FileNotFoundError(
                f"base pipeline folder {base!r} has no model_index.json: give the folder of a "
                "diffusers pipeline (save_pretrained output)"
            )
    try:
        return str(base), cls.load_config(base, **hub)
    except OSError as err:
        raise explain_unavailable(
            str(base), "base pipeline", err, offline_alternative=cls._offline_alternative
        ) from err


def add_original(
    components: dict[str, Any],
    base: str,
    index: dict[str, Any],
    slot: str,
    *,
    safe: bool,
    keep_original: bool,
    load: Callable[[], Any],
) -> None:
    """Set ``original_<slot>`` among the components ``from_pretrained`` will get: None unless the slot is safe and
    its original is kept; from a plain base, the base's own encoder of the slot (``load()``); from a saved Safer
    pipeline nothing, as diffusers loads ``original_<slot>/`` itself (which the folder must then hold)."""
    name = f"original_{slot}"
    if not safe or not keep_original:
        components[name] = None
    elif index.get("safe_text_encoder_slots") is None:
        components[name] = load()
    elif not (index.get(name) or [None])[0]:
        raise ValueError(
            f"{base} was saved without its original encoder ({name}/), so keep_original=True cannot be honoured: "
            "save the pipeline after loading it with keep_original=True, or pass a plain base pipeline."
        )


def load_original_encoder(base: str, slot: str, model_class, allow_pickle: bool, dtype, hub: dict):
    """The base pipeline's own encoder of ``slot`` in eval mode: safetensors only, or with ``allow_pickle``
    safetensors where present and pickle weights otherwise."""
    extra = {"dtype": dtype} if dtype is not None else {}
    return model_class.from_pretrained(
        base, subfolder=slot, use_safetensors=None if allow_pickle else True, **hub, **extra
    ).eval()
