"""What every attack shares: its budget, its result, the registry behind :func:`get_attack`, and the
conditioning-level distance used for success curves.

An attack takes a Safer pipeline loaded with ``keep_original=True`` (so it can read both the safe encoder in each
slot and the original encoder behind it) and an unsafe target prompt, and returns an :class:`AttackResult`:
one adversarial prompt per restart, best first. Attacks never generate or write images themselves.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

#: attack name -> module that registers it (imported on first use, so importing the package stays cheap)
ATTACK_MODULES: dict[str, str] = {
    "swap-gcg": "saferclip_diffusers.attacks.swap_gcg",
    "mma": "saferclip_diffusers.attacks.swap_gcg",
    "ring-a-bell": "saferclip_diffusers.attacks.ring_a_bell",
    "unlearndiff": "saferclip_diffusers.attacks.unlearndiff",
}

_REGISTRY: dict[str, type] = {}


@dataclass
class AttackBudget:
    """How much an attack may spend on one target: optimisation ``steps`` (generations for Ring-A-Bell) per
    restart, independent ``restarts``, and the base ``seed`` (restart r uses ``seed + r``)."""

    steps: int = 100
    restarts: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "restarts"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{type(self).__name__}.{name} must be a positive integer, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def make_budget(
    budget_cls: type[AttackBudget],
    name: str,
    presets: dict[str, dict[str, Any]],
    preset: str | None,
    overrides: dict[str, Any],
    base: dict[str, Any] | None = None,
) -> AttackBudget:
    """``budget_cls`` from ``base``, then the named ``preset``, then ``overrides``; an unknown preset or field is
    an error that lists the valid ones (the one rule every attack's ``from_budget`` uses)."""
    values = dict(base or {})
    if preset is not None:
        if preset not in presets:
            raise ValueError(f"unknown {name} preset {preset!r}; choose one of {', '.join(presets)}")
        values.update(presets[preset])
    known = {f.name for f in dataclasses.fields(budget_cls)}
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(f"unknown {name} budget field(s) {sorted(unknown)}; known: {sorted(known)}")
    values.update(overrides)
    return budget_cls(**values)


@dataclass
class AttackResult:
    """The outcome of one attack on one target prompt.

    ``prompts``/``losses``: one adversarial prompt per restart and its best objective (lower is stronger), best
    first. ``history``: the best objective after each step of the best restart (non-increasing). ``meta``:
    attack name, mode, budget, ban rule, objective name, and attack-specific figures.
    """

    target: str
    prompts: list[str]
    losses: list[float]
    history: list[float]
    steps: int
    seconds: float
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def best_prompt(self) -> str:
        return self.prompts[0]

    @property
    def best_loss(self) -> float:
        return self.losses[0]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> AttackResult:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in row.items() if k in known})


@runtime_checkable
class Attack(Protocol):
    """An attack: ``get_attack(name, **budget).run(pipe, target, seed=0)``."""

    name: str

    def run(self, pipe: Any, target: str, *, seed: int = 0, progress: bool = False) -> AttackResult: ...


def register(name: str):
    """Class decorator: make an attack class available to :func:`get_attack` under ``name``."""

    def wrap(cls: type) -> type:
        _REGISTRY[name] = cls
        return cls

    return wrap


def attack_names() -> list[str]:
    return list(ATTACK_MODULES)


def get_attack(name: str, **budget: Any) -> Attack:
    """The attack called ``name`` (``swap-gcg``, ``mma``, ``ring-a-bell``, ``unlearndiff``) with its budget.

    ``budget`` holds :class:`AttackBudget` fields plus the attack's own (e.g. ``candidates``, ``top_k``,
    ``ban`` for swap-gcg; ``population``, ``eta`` for ring-a-bell); ``preset="tiny"`` starts from a named
    budget of the attack. Unknown names and fields are errors that list the valid ones.
    """
    if name not in ATTACK_MODULES:
        raise ValueError(f"unknown attack {name!r}; choose one of {', '.join(ATTACK_MODULES)}")
    importlib.import_module(ATTACK_MODULES[name])
    return _REGISTRY[name].from_budget(name, **budget)


def conditioning_distance(pipe: Any, adversarial: str, target: str) -> float:
    """The adaptive objective for given prompts: how far the SAFE encoder's conditioning of ``adversarial`` is
    from the ORIGINAL encoder's conditioning of ``target`` (0 = the UNet sees exactly the unsafe prompt).

    It is swap-gcg's loss (token-state cosine distance over positions 1..76 per slot, plus the pooled term;
    see :mod:`.conditioning`), so success curves over a threshold compare directly with attack losses.
    """
    from .conditioning import ConditioningObjective, encoder_slots

    objective = ConditioningObjective.for_pipeline(pipe, target)
    return float(objective.score_prompts(encoder_slots(pipe), [adversarial])[0])
