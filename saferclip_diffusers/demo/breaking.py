""" "Try to break it": the adaptive attack (swap-gcg, :mod:`saferclip_diffusers.attacks`) on the page's prompt,
with a small bounded budget, then both sides generated from the adversarial prompt.

swap-gcg searches discrete prompt tokens so that the SAFE encoder's conditioning of the adversarial prompt comes
close to the ORIGINAL encoder's conditioning of the prompt typed in (the attacker knows an encoder swap is in
place). The page then shows that adversarial prompt and the original and safe images made from it, screened
and blurred as every other result. Targets that involve minors are refused by the attack library, always.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from .engine import DemoEngine, GenerationRequest, GenerationResult, ProgressFn
from .limits import InputError

MAX_ATTACK_STEPS = 500
ATTACK_BUDGET = {
    "candidates": 64,
    "top_k": 64,
    "restarts": 1,
    "patience": None,
}  # per step: 64 prompts scored


@dataclass
class BreakResult:
    target: str
    adversarial: str
    loss: float  # conditioning distance reached (0: the UNet sees exactly the typed prompt's original conditioning)
    start_loss: float  # after the first step
    steps: int
    seconds: float
    generation: GenerationResult


def break_prompt(
    engine: DemoEngine, request: GenerationRequest, steps: int, progress: ProgressFn | None = None
) -> BreakResult:
    """Attack ``request.prompt`` for ``steps`` swap-gcg steps, then generate both sides from the best prompt."""
    from ..attacks import RefusedTargetError, get_attack

    if not 1 <= steps <= MAX_ATTACK_STEPS:
        raise ValueError(f"attack steps must be between 1 and {MAX_ATTACK_STEPS}, got {steps}")
    engine.limits.check(**asdict(request))
    attack = get_attack("swap-gcg", steps=int(steps), seed=int(request.seed), **ATTACK_BUDGET)
    if progress is not None:
        progress(0, steps, f"searching an adversarial prompt ({steps} swap-gcg steps)")
    try:
        # on the pipeline itself, one attack at a time: generation works on per-thread views (own tokenizers),
        # so the attack's tokenizer calls do not meet a concurrent generation's
        with engine.attack_lock:
            found = attack.run(engine.pipe, request.prompt, seed=0)
    except RefusedTargetError as err:
        raise InputError(str(err)) from err
    adversarial = found.best_prompt
    generation = engine.generate(replace(request, prompt=adversarial), progress=progress)
    history = found.history or [found.best_loss]
    return BreakResult(
        target=request.prompt,
        adversarial=adversarial,
        loss=found.best_loss,
        start_loss=history[0],
        steps=found.steps,
        seconds=found.seconds,
        generation=generation,
    )


def break_note(result: BreakResult) -> str:
    """What the attack found, in a short paragraph for the page."""
    return (
        f"**Adversarial prompt** (swap-gcg, {result.steps} steps, {result.seconds:.1f} s): `{result.adversarial}`\n\n"
        f"Conditioning distance to the typed prompt's original conditioning: {result.start_loss:.4f} after the "
        f"first step, {result.loss:.4f} at the end (0 = the UNet would see exactly the unsafe prompt). The images below are "
        "made from the adversarial prompt; a real attack runs for hundreds of steps (eval/attacks.py)."
    )
