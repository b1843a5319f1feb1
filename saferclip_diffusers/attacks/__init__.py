"""Jailbreak attacks on safe text encoders: adaptive (swap-gcg), transfer (mma, ring-a-bell), through the UNet
(unlearndiff), and readers for published attack-prompt files. See ``docs/attacks.md``.

Only the light contract is imported here; each attack module loads on first use through :func:`get_attack`.
"""

from .base import Attack, AttackBudget, AttackResult, attack_names, conditioning_distance, get_attack
from .prompt_files import AttackPrompt, read_attack_prompts
from .safety import RefusedTargetError, check_target

__all__ = [
    "Attack",
    "AttackBudget",
    "AttackPrompt",
    "AttackResult",
    "RefusedTargetError",
    "attack_names",
    "check_target",
    "conditioning_distance",
    "get_attack",
    "read_attack_prompts",
]
