"""Attack evaluations: presets (model set, generation settings, attack budgets) and the fingerprinted run config.

Presets (every generation field has a flag; budgets can be overridden per attack with ``--budget KEY=VALUE``):

``tiny``               CPU tests: tiny random-weight SD, 32 px, 2 steps, 3 targets, minimal budgets.
``tiny-sdxl``          the same through the SDXL code path.
``sd14``               the UnlearnDiffAtk setting on a GPU: SD 1.4, the 142 nudity prompts, one image per attempt
                       with the row's seed and guidance, 50 steps; budgets sized so that a 142-prompt run of one
                       attack takes hours, not days (swap-gcg 250 steps x 2 restarts).
``sd15``, ``sdxl``     the same budgets on SD 1.5 / SDXL.
``paper-mma``          MMA-Diffusion's published budget (1000 steps, 5 restarts, 512 candidates, top-256).
``paper-ring-a-bell``  Ring-A-Bell's (population 200, 3000 generations).
``paper-unlearndiff``  UnlearnDiffAtk's (5 prefix tokens, 40 Adam steps at each of up to 50 timesteps).

The model each preset loads is the one :mod:`saferclip_diffusers.presets` gives for its ``model`` name.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .protocol import ScoringSpec, SystemSpec, config_fingerprint

ATTACKS = ("swap-gcg", "mma", "ring-a-bell", "ring-a-bell-adaptive", "unlearndiff")
"""Attacks a run can name (plus ``file:PATH``). ``mma`` and ``ring-a-bell`` are transfer attacks computed against
the ORIGINAL encoder (as published) and replayed on every system; the others are adaptive: computed against each
system's own text encoder (and, for ``unlearndiff``, its UNet)."""

TRANSFER = ("mma", "ring-a-bell")
GRID_DIR = "grid_cells"
GRID_CELL = 192  # px, the thumbnails kept for grid.png
LIBRARY_NAME = {"ring-a-bell-adaptive": "ring-a-bell"}


def is_transfer(attack: str) -> bool:
    return attack in TRANSFER or attack.startswith("file:")


def encoder_key(system) -> str:
    """Which text encoder a system conditions with: a safe system's own, else the original."""
    return system.name if system.kind == "safe" else "original"


def cell_path(directory: str | os.PathLike, target_id: int, system: str, attack: str, variant: str) -> Path:
    safe = "".join(
        c if c.isalnum() or c in "._-" else "_" for c in f"{system}__{attack or 'none'}__{variant}"
    )
    return Path(directory) / GRID_DIR / f"{target_id:05d}" / f"{safe}.png"


@dataclass(frozen=True)
class AttackProtocol:
    """How targets are chosen, attacked and rendered. Changing a field changes the run fingerprint."""

    name: str
    model: str  # a saferclip_diffusers.presets name
    num_inference_steps: int
    guidance_scale: float
    height: int | None = None  # None: the model's default size
    width: int | None = None
    images_per_attempt: int = 1
    row_guidance: bool = True  # the prompt file's guidance per row (UnlearnDiffAtk), else guidance_scale
    subset: str | None = "nudity-142"
    limit: int | None = None
    budgets: dict[str, dict[str, Any]] = field(default_factory=dict)  # attack -> get_attack keywords
    q16: bool = True  # Q16 on by default, as in eval/i2p.py's real presets (off for offline smoke presets)

    def budget(self, attack: str) -> dict[str, Any]:
        return dict(self.budgets.get(attack) or self.budgets.get(LIBRARY_NAME.get(attack, attack)) or {})

    def validate(self) -> None:
        if self.num_inference_steps < 1 or self.images_per_attempt < 1:
            raise ValueError("steps and images per attempt must be at least 1")
        for side in (self.height, self.width):
            if side is not None and (side < 8 or side % 8):
                raise ValueError(f"height and width must be multiples of 8, got {side}")


_TINY_BUDGETS = {a: {"preset": "tiny"} for a in ("swap-gcg", "mma", "ring-a-bell", "unlearndiff")}
_GPU_BUDGETS = {
    "swap-gcg": {"steps": 250, "restarts": 2},
    "mma": {"steps": 250, "restarts": 2},
    "ring-a-bell": {"steps": 500, "restarts": 1},
    "unlearndiff": {"steps": 40, "restarts": 1},
}
_PAPER_BUDGETS = {
    "swap-gcg": {"preset": "paper"},
    "mma": {"preset": "paper"},
    "ring-a-bell": {"preset": "paper"},
    "unlearndiff": {"preset": "paper"},
}

PROTOCOLS: dict[str, AttackProtocol] = {
    "tiny": AttackProtocol(
        "tiny",
        "tiny",
        num_inference_steps=2,
        guidance_scale=7.5,
        height=32,
        width=32,
        limit=3,
        budgets=_TINY_BUDGETS,
        q16=False,
    ),
    "tiny-sdxl": AttackProtocol(
        "tiny-sdxl",
        "tiny-sdxl",
        num_inference_steps=2,
        guidance_scale=5.0,
        height=32,
        width=32,
        limit=2,
        row_guidance=False,
        budgets=_TINY_BUDGETS,
        q16=False,
    ),
    "sd14": AttackProtocol("sd14", "sd14", num_inference_steps=50, guidance_scale=7.5, budgets=_GPU_BUDGETS),
    "sd15": AttackProtocol("sd15", "sd15", num_inference_steps=50, guidance_scale=7.5, budgets=_GPU_BUDGETS),
    "sdxl": AttackProtocol(
        "sdxl", "sdxl", num_inference_steps=50, guidance_scale=5.0, row_guidance=False, budgets=_GPU_BUDGETS
    ),
    "paper-mma": AttackProtocol(
        "paper-mma", "sd14", num_inference_steps=50, guidance_scale=7.5, budgets=_PAPER_BUDGETS
    ),
    "paper-ring-a-bell": AttackProtocol(
        "paper-ring-a-bell", "sd14", num_inference_steps=50, guidance_scale=7.5, budgets=_PAPER_BUDGETS
    ),
    "paper-unlearndiff": AttackProtocol(
        "paper-unlearndiff", "sd14", num_inference_steps=50, guidance_scale=7.5, budgets=_PAPER_BUDGETS
    ),
}


def get_attack_protocol(
    name: str, budgets: dict[str, dict[str, Any]] | None = None, **overrides: Any
) -> AttackProtocol:
    """A preset with field ``overrides`` (None ignored) and per-attack budget overrides merged in."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown attack preset {name!r}; choose one of {', '.join(PROTOCOLS)}")
    base = PROTOCOLS[name]
    changes = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(changes) - {f.name for f in dataclasses.fields(AttackProtocol)}
    if unknown:
        raise ValueError(f"unknown attack protocol field(s): {', '.join(sorted(unknown))}")
    merged = {k: dict(v) for k, v in base.budgets.items()}
    for attack, extra in (budgets or {}).items():
        merged.setdefault(LIBRARY_NAME.get(attack, attack), {}).update(extra)
    protocol = dataclasses.replace(base, budgets=merged, **changes)
    protocol.validate()
    return protocol


@dataclass(frozen=True)
class AttackRunConfig:
    """Everything that determines the stored records; its fingerprint guards resume."""

    protocol: AttackProtocol
    base: str
    torch_dtype: str
    attacks: tuple[str, ...]
    systems: tuple[SystemSpec, ...]
    targets: dict[str, Any]  # the selection, target ids and a digest of (id, prompt, seed, guidance)
    scoring: ScoringSpec  # NudeNet version and ONNX sha256, Q16 model
    minors_words: tuple[str, ...] | None = None  # None: the library's default list
    base_digest: str | None = None  # content digest of a local base folder (None: a hub id)
    random_weights: bool = False  # the preset's explicit flag: label every output as not a result
    sdxl: bool = False

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self), sort_keys=True, default=str))

    def fingerprint(self) -> str:
        """Over content, not paths (as the I2P runner's): local folders count by their digests, so the same run
        moved to another place (a changed HOME or tiny-model cache) keeps its fingerprint."""
        ident = self.to_dict()
        if self.base_digest is not None:
            ident["base"] = f"local:{ident.pop('base_digest')}"
        if ident["scoring"].get("q16_clip_digest"):
            ident["scoring"]["q16_clip"] = f"local:{ident['scoring']['q16_clip_digest']}"
        ident["scoring"].pop("q16_clip_digest", None)
        for system in ident["systems"]:
            for slot, digest in (
                ("safe_text_encoder", "encoder_digest"),
                ("safe_text_encoder_2", "encoder_2_digest"),
            ):
                if system.get(digest):
                    system[slot] = f"local:{system[digest]}"
                system.pop(digest, None)
        return config_fingerprint(ident)
