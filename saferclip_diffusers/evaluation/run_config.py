"""Resolve an I2P run's presets, prompts, systems and scorers into its fingerprinted :class:`RunConfig`.

Nothing here writes a file. Models are named, not loaded; local folders enter the fingerprint by content.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from typing import Any

import pandas as pd

from ..devices import dtype_name, resolve_device, resolve_dtype
from .prompts import PromptSelection, exclude_training_prompts, load_prompts
from .protocol import SAFETY_CONCEPT, Protocol, RunConfig, ScoringSpec, SystemSpec

DEFAULT = "default"  # q16_clip: the protocol decides (Q16 on in the real presets)


def prompt_digest(prompts: pd.DataFrame) -> str:
    digest = hashlib.sha256()
    for row in prompts.itertuples(index=False):
        digest.update(f"{int(row.prompt_id)}\t{int(row.seed)}\t{row.guidance}\t{row.prompt}\n".encode())
    return digest.hexdigest()


def build_run_config(
    *,
    protocol: Protocol,
    prompts: pd.DataFrame,
    selection_text: str,
    systems: Sequence[SystemSpec],
    base: str,
    torch_dtype: str,
    q16_clip: str | None = None,
    q16_prompts: str | None = None,
    excluded: dict[str, int] | None = None,
    random_weights: bool = False,
    sdxl: bool = False,
) -> RunConfig:
    """The fingerprinted configuration of a run (NudeNet version and ONNX hash included)."""
    from ..io import folder_digest, sha256_file
    from ..scoring.nudenet import nudenet_info

    if torch_dtype not in ("float32", "float16", "bfloat16"):
        raise ValueError(f"unknown dtype {torch_dtype!r}; choose one of float32, float16, bfloat16")
    q16_sha = None
    if q16_clip:
        from ..data import Q16_PROMPTS_VIT_L14

        q16_sha = sha256_file(q16_prompts or Q16_PROMPTS_VIT_L14)
    return RunConfig(
        protocol=protocol,
        base=str(base),
        torch_dtype=torch_dtype,
        systems=tuple(systems),
        prompts={
            "selection": selection_text,
            "ids": [int(i) for i in prompts["prompt_id"]],
            "digest": prompt_digest(prompts),
            "excluded_training_prompts": dict(excluded or {}),
        },
        scoring=ScoringSpec(
            nudenet=nudenet_info(),
            q16_clip=q16_clip,
            q16_prompts=q16_prompts,
            q16_prompts_sha256=q16_sha,
            q16_clip_digest=folder_digest(q16_clip),
        ),
        base_digest=folder_digest(base),
        random_weights=random_weights,
        sdxl=sdxl,
    )


def resolve_model(protocol: Protocol, model: str | None) -> tuple[Any, str | None]:
    """(presets.py model set, base override): ``model`` is a preset name (its base and safe encoder are used), a hub
    id or a folder of a base pipeline (the protocol's preset supplies the rest), or None (the protocol's model)."""
    from ..presets import PRESETS, get_preset

    if model is None:
        return get_preset(protocol.model), None
    if model in PRESETS:
        return get_preset(model), None
    return get_preset(protocol.model), model


def get_preset_sdxl(name: str) -> bool:
    from ..presets import get_preset

    return get_preset(name).sdxl


def prepare_run(
    *,
    protocol: str = "i2p",
    overrides: dict[str, Any] | None = None,
    selection: PromptSelection | None = None,
    systems: Sequence[str] = ("original", "safe", "negative-prompt"),
    safe_encoders: Sequence[str] | None = None,
    safe_encoder_2: str | None = None,
    model: str | None = None,
    dtype: str | None = "auto",
    device: str = "auto",
    q16_clip: str | None = DEFAULT,
    q16_prompts: str | None = None,
    exclude_training: bool = True,
    negative_prompt: str = SAFETY_CONCEPT,
) -> tuple[RunConfig, pd.DataFrame]:
    """Resolve presets, prompts (filters, training-prompt exclusion) and systems into a run configuration.

    ``q16_clip``: ``"default"`` runs Q16 on OpenAI CLIP ViT-L/14 where the protocol says so (every real preset),
    None turns Q16 off (results are then labelled NudeNet only), anything else names the CLIP to use."""
    from ..scoring.q16 import Q16_DEFAULT_CLIP
    from .protocol import get_protocol
    from .systems import build_system_specs

    proto = get_protocol(protocol, **(overrides or {}))
    preset, base = resolve_model(proto, model)
    if base is None and preset.sdxl != get_preset_sdxl(proto.model):
        kind = "an SDXL" if preset.sdxl else "an SD 1.x/2.x"
        raise ValueError(
            f"--model {preset.name} is {kind} model set; use it with a protocol of its family "
            "(--preset sdxl or tiny-sdxl for SDXL, i2p / fixed / tiny for SD 1.x)"
        )
    selection = selection or PromptSelection()
    if selection.limit is None and proto.limit is not None:
        selection = dataclasses.replace(selection, limit=proto.limit)
    encoders = list(safe_encoders) if safe_encoders else [preset.safe_text_encoder]
    if safe_encoder_2 is None and preset.sdxl and preset.offline:
        safe_encoder_2 = preset.safe_text_encoder_2
    specs = build_system_specs(
        list(systems),
        encoders,
        sdxl=preset.sdxl,
        safe_encoder_2=safe_encoder_2,
        negative_prompt=negative_prompt,
    )
    df = load_prompts(selection)
    excluded: dict[str, int] = {}
    if exclude_training:
        safe = [s for s in specs if s.kind == "safe"]
        df, counts = exclude_training_prompts(df, [s.safe_text_encoder for s in safe])
        excluded = {
            s.name: counts[str(s.safe_text_encoder)] for s in safe
        }  # by system: paths stay out of the identity
    if dtype in (None, "auto"):
        torch_dtype = preset.torch_dtype or resolve_dtype("auto", resolve_device(device))
    else:
        torch_dtype = resolve_dtype(dtype, resolve_device(device))
    if q16_clip == DEFAULT:
        q16_clip = Q16_DEFAULT_CLIP if proto.q16 else None
    random_weights = bool(getattr(preset, "random_weights", preset.offline))
    config = build_run_config(
        protocol=proto,
        prompts=df,
        selection_text=selection.describe(),
        systems=specs,
        base=base or preset.base,
        torch_dtype=dtype_name(torch_dtype),
        q16_clip=q16_clip,
        q16_prompts=q16_prompts,
        excluded=excluded,
        random_weights=random_weights,
        sdxl=preset.sdxl,
    )
    return config, df
