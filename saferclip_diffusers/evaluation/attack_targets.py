"""Which targets an attack run uses and the run configuration that fingerprints them.

Optimising attacks take their targets from the I2P prompt machinery (default: UnlearnDiffAtk's 142 nudity
prompts, with each row's seed and guidance). A ``file:PATH`` attack brings its own rows: a published attack-prompt
file (MMA-Diffusion, Ring-A-Bell, P4D, UnlearnDiffAtk, SneakyPrompt layouts, recognised by their columns), whose
adversarial prompts are replayed on every system; its clean target, where the file has one, is the ``pre`` prompt.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from typing import Any

import pandas as pd

from .attack_protocol import ATTACKS, AttackRunConfig, get_attack_protocol
from .protocol import SAFETY_CONCEPT, ScoringSpec


def check_attacks(attacks: Sequence[str]) -> tuple[str, ...]:
    if not attacks:
        raise ValueError(
            "no attack given: use --attack swap-gcg (or mma, ring-a-bell, ring-a-bell-adaptive, "
            "unlearndiff, file:PATH)"
        )
    unknown = [a for a in attacks if a not in ATTACKS and not a.startswith("file:")]
    if unknown:
        raise ValueError(
            f"unknown attack(s) {', '.join(unknown)}; choose from {', '.join(ATTACKS)} or file:PATH"
        )
    if len(set(attacks)) != len(attacks):
        raise ValueError(f"an attack is listed twice: {', '.join(attacks)}")
    files = [a for a in attacks if a.startswith("file:")]
    if files and len(attacks) > 1:
        raise ValueError(
            "a file:PATH attack brings its own targets: run it alone (one --attack per run folder)"
        )
    return tuple(attacks)


def file_targets(path: str, limit: int | None = None, default_seed: int = 0) -> pd.DataFrame:
    """Rows of a published attack-prompt file as targets (one adversarial prompt each)."""
    from ..attacks.prompt_files import read_attack_prompts

    rows = []
    for i, item in enumerate(read_attack_prompts(path)):
        rows.append(
            {
                "prompt_id": i,
                "prompt": item.target or item.prompt,
                "adversarial": [item.prompt],
                "seed": item.seed if item.seed is not None else default_seed + i,
                "guidance": item.guidance,
                "categories": (item.category,) if item.category else (),
            }
        )
    if not rows:
        raise ValueError(f"{path} holds no attack prompts")
    df = pd.DataFrame(rows)
    return df.head(limit) if limit else df


def targets_digest(df: pd.DataFrame) -> str:
    digest = hashlib.sha256()
    for row in df.itertuples(index=False):
        adversarial = "\t".join(getattr(row, "adversarial", None) or [])
        digest.update(
            f"{int(row.prompt_id)}\t{int(row.seed)}\t{row.guidance}\t{row.prompt}\t{adversarial}\n".encode()
        )
    return digest.hexdigest()


def prepare_attack_run(
    *,
    preset: str = "sd14",
    attacks: Sequence[str] = ("swap-gcg",),
    systems: Sequence[str] = ("original", "safe", "negative-prompt"),
    safe_encoders: Sequence[str] | None = None,
    safe_encoder_2: str | None = None,
    base: str | None = None,
    dtype: str = "auto",
    device: str = "auto",
    prompts: str | None = None,
    subset: str | None = None,
    categories: Sequence[str] = (),
    limit: int | None = None,
    budgets: dict[str, dict[str, Any]] | None = None,
    overrides: dict[str, Any] | None = None,
    q16_clip: str | None = "default",
    exclude_training: bool = True,
    minors_words: Sequence[str] | None = None,
    negative_prompt: str = SAFETY_CONCEPT,
) -> tuple[AttackRunConfig, pd.DataFrame]:
    """Resolve the preset, targets and systems into a fingerprinted run configuration."""
    from ..devices import dtype_name, resolve_device, resolve_dtype
    from ..io import folder_digest
    from ..presets import get_preset
    from ..scoring.nudenet import nudenet_info
    from ..scoring.q16 import Q16_DEFAULT_CLIP
    from .prompts import PromptSelection, exclude_training_prompts, load_prompts
    from .systems import build_system_specs

    attacks = check_attacks(attacks)
    protocol = get_attack_protocol(preset, budgets=budgets, **(overrides or {}))
    model = get_preset(protocol.model)
    limit = limit or protocol.limit
    if attacks[0].startswith("file:"):
        df = file_targets(attacks[0][5:], limit)
        selection = f"file {attacks[0][5:]}"
    else:
        sel = PromptSelection(
            source=prompts,
            subset=subset if (subset or prompts) else protocol.subset,
            categories=tuple(categories),
            limit=limit,
        )
        df = load_prompts(sel)[["prompt_id", "prompt", "seed", "guidance", "categories"]].copy()
        selection = sel.describe()
    encoders = list(safe_encoders) if safe_encoders else [model.safe_text_encoder]
    if safe_encoder_2 is None and model.sdxl and model.offline:
        safe_encoder_2 = model.safe_text_encoder_2
    specs = build_system_specs(
        list(systems),
        encoders,
        sdxl=model.sdxl,
        safe_encoder_2=safe_encoder_2,
        negative_prompt=negative_prompt,
    )
    excluded: dict[str, int] = {}
    if exclude_training and not attacks[0].startswith("file:"):
        safe = [s for s in specs if s.kind == "safe"]
        df, counts = exclude_training_prompts(df, [s.safe_text_encoder for s in safe])
        excluded = {s.name: counts[str(s.safe_text_encoder)] for s in safe}
    if dtype in (None, "auto") and model.torch_dtype is not None:
        torch_dtype = dtype_name(model.torch_dtype)
    else:
        torch_dtype = dtype_name(resolve_dtype(dtype, resolve_device(device)))
    if q16_clip == "default":
        q16_clip = Q16_DEFAULT_CLIP if protocol.q16 else None
    config = AttackRunConfig(
        protocol=dataclasses.replace(protocol, limit=limit),
        base=str(base or model.base),
        torch_dtype=torch_dtype,
        attacks=attacks,
        systems=tuple(specs),
        targets={
            "selection": selection,
            "ids": [int(i) for i in df["prompt_id"]],
            "digest": targets_digest(df),
            "excluded_training_prompts": excluded,
        },
        scoring=ScoringSpec(
            nudenet=nudenet_info(), q16_clip=q16_clip, q16_clip_digest=folder_digest(q16_clip)
        ),
        minors_words=tuple(minors_words) if minors_words is not None else None,
        base_digest=folder_digest(base or model.base),
        random_weights=bool(getattr(model, "random_weights", model.offline)),
        sdxl=model.sdxl,
    )
    return config, df.reset_index(drop=True)
