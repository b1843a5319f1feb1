"""SwapGCG: the adaptive white-box token attack on an encoder swap, and MMA-Diffusion's setting.

Threat model: the attacker knows the safe encoder(s), the tokenizers and the original encoder(s); the UNet is
the public original. Goal: a discrete prompt whose SAFE conditioning reproduces the ORIGINAL conditioning of an
unsafe target (objective ``states``, see :mod:`.conditioning`). If it succeeds, the unchanged UNet renders the
target. ``get_attack("mma")`` is MMA-Diffusion's setting: pooled objective against the ORIGINAL encoder, 20 free
tokens, random-letter init; its prompts are then transferred to the safe pipeline.

One step (GCG, with MMA's known quirks fixed): gradient of the loss w.r.t. a one-hot of the adversarial tokens
(rows line up with the adversarial positions; SDXL: one one-hot shared by both slots, gradients add); banned
and special ids get ``+inf``; ``candidates`` single-token swaps, positions round-robin, new ids uniform from each
position's ``top_k``; a candidate is kept only if its decoded text re-tokenizes to exactly its ids with every
tokenizer of the pipeline, differs from the current prompt and contains no banned word (invalid slots are
resampled up to 3 times, never duplicated); the current prompt moves to the best candidate (MMA) and the best
ever is tracked. Restarts use ``seed + r``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .ban import BAN_RULES, allowed_mask, banned_ids
from .base import AttackBudget, AttackResult, make_budget, register
from .conditioning import (
    ConditioningObjective,
    Slot,
    encoder_slots,
    forward_slot,
    full_ids,
    pooled_slot,
)
from .safety import check_target
from .soft_tokens import embedding_matrix, with_soft_rows
from .swap_gcg_prompts import INITS, LETTERS, MODES, PromptSearch, decode  # noqa: F401  (public names)


@dataclass
class SwapGCGBudget(AttackBudget):
    """``length``: adversarial tokens (free mode default: the target's own token count, so end-of-text and pad
    positions line up; prefix/suffix default 5). ``init``: ``letters`` (MMA), ``carrier`` (the sanitized target),
    ``random`` (allowed ids) or any other string = the initial adversarial text. ``patience``: stop after that
    many steps without a new best."""

    steps: int = 250
    candidates: int = 256
    top_k: int = 256
    mode: str = "free"
    length: int | None = None
    init: str = "letters"
    ban: str = "mma"
    objective: str = "states"
    encoder: str = "safe"
    w_pool: float | None = None
    patience: int | None = 50
    eval_batch: int = 128

    def __post_init__(self) -> None:
        super().__post_init__()
        checks = [
            (self.mode in MODES, f"mode must be one of {MODES}"),
            (self.ban in BAN_RULES, f"ban must be one of {BAN_RULES}"),
            (self.objective in ("states", "pooled"), "objective must be 'states' or 'pooled'"),
            (self.encoder in ("safe", "original"), "encoder must be 'safe' or 'original'"),
            (
                self.candidates >= 1 and self.top_k >= 1 and self.eval_batch >= 1,
                "candidates, top_k, eval_batch must be >= 1",
            ),
            (self.length is None or 1 <= self.length <= 75, "length must be in [1, 75]"),
            (self.patience is None or self.patience >= 1, "patience must be >= 1 or None"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"swap-gcg budget: {msg}")


PRESETS: dict[str, dict] = {
    "tiny": dict(steps=3, candidates=8, top_k=8, restarts=1, patience=None),
    "gpu-quick": dict(steps=100, candidates=128, top_k=128, patience=30),
    "gpu": dict(steps=250, candidates=256, top_k=256, restarts=2, patience=50),
    # 32 candidates: 7.5x fewer FLOPs per step than "gpu"; on tiny models as successful as 64 (docs/attacks.md)
    "gpu-lean": dict(steps=250, candidates=32, top_k=256, restarts=2, patience=50),
    "paper-mma": dict(steps=1000, candidates=512, top_k=256, restarts=5, patience=None, length=20),
}
PRESETS["paper"] = PRESETS["paper-mma"]  # MMA-Diffusion's published budget
MMA_DEFAULTS = dict(
    objective="pooled",
    encoder="original",
    length=20,
    init="letters",
    ban="mma",
    candidates=512,
    top_k=256,
    steps=1000,
    restarts=5,
    patience=None,
)


@register("swap-gcg")
@register("mma")
class SwapGCG(PromptSearch):
    def __init__(self, name: str, budget: SwapGCGBudget):
        self.name, self.budget = name, budget

    @classmethod
    def from_budget(cls, name: str, preset: str | None = None, **kwargs) -> SwapGCG:
        base = MMA_DEFAULTS if name == "mma" else None
        return cls(name, make_budget(SwapGCGBudget, name, PRESETS, preset, kwargs, base))

    # ------------------------------------------------------------------ one step
    def _gradient(self, slots, objective, carrier, adv: torch.Tensor, vocab: int) -> torch.Tensor:
        enc_name = self.budget.encoder
        device = next(slots[0].encoder(enc_name).parameters()).device
        one_hot = F.one_hot(adv, vocab).float().to(device).requires_grad_(True)
        cores = self._assemble(carrier, adv[None])
        positions = self._adv_positions(carrier, len(adv))
        hidden, pooled = [], None
        for i, slot in enumerate(slots):
            encoder = slot.encoder(enc_name)
            weight = embedding_matrix(encoder)
            ids = full_ids(slot, cores).to(device)
            rows = (one_hot.to(weight.dtype) @ weight)[None]
            h, p = forward_slot(slot, encoder, ids, with_soft_rows(encoder, ids, positions, rows))
            hidden.append(h)
            if i == pooled_slot(slots):
                pooled = p
        loss = objective.loss(hidden, pooled).sum()
        (grad,) = torch.autograd.grad(loss, one_hot)
        return grad.float().cpu()

    # ------------------------------------------------------------------ run
    def run(self, pipe, target: str, *, seed: int = 0, progress: bool = False) -> AttackResult:
        return self.run_slots(encoder_slots(pipe), target, seed=seed, progress=progress)

    def run_slots(
        self, slots: list[Slot], target: str, *, seed: int = 0, progress: bool = False
    ) -> AttackResult:
        from tqdm.auto import tqdm

        check_target(target)
        b = self.budget
        start = time.perf_counter()
        objective = ConditioningObjective.for_slots(slots, target, b.objective, b.w_pool)
        carrier, target_ids, n = self._layout(slots, target)
        vocab = embedding_matrix(slots[0].original).shape[0]
        banned = banned_ids([s.tokenizer for s in slots], b.ban)
        allowed = allowed_mask(vocab, banned)
        runs = []
        steps_done = 0
        for r in range(b.restarts):
            gen = torch.Generator().manual_seed(int(b.seed) + int(seed) + r)
            adv = self._init(slots, carrier, target_ids, n, allowed, gen)
            text = self._valid(slots, self._assemble(carrier, adv[None]), None)[0]
            cur_loss = float(objective.score_ids(slots, self._assemble(carrier, adv[None]), b.encoder)[0])
            best = (cur_loss, text, adv.clone())
            history, since = [], 0
            bar = tqdm(
                range(b.steps),
                desc=f"{self.name} restart {r + 1}/{b.restarts}",
                disable=not progress,
                leave=False,
            )
            for _ in bar:
                grad = self._gradient(slots, objective, carrier, adv, vocab)
                cand, texts = self._candidates(slots, carrier, adv, grad, allowed, text, gen)
                steps_done += 1
                if len(texts):
                    losses = objective.score_ids(
                        slots, self._assemble(carrier, cand), b.encoder, b.eval_batch
                    )
                    j = int(losses.argmin())
                    adv, text, cur_loss = cand[j].clone(), texts[j], float(losses[j])
                if cur_loss < best[0]:
                    best, since = (cur_loss, text, adv.clone()), 0
                else:
                    since += 1
                history.append(best[0])
                bar.set_postfix(best=f"{best[0]:.4f}")
                if b.patience and since >= b.patience:
                    break
            runs.append((best[0], best[1], history))
        runs.sort(key=lambda x: x[0])
        adaptive = ConditioningObjective.for_slots(slots, target, "states")
        safe_distance = adaptive.score_prompts(slots, [p for _, p, _ in runs], "safe").tolist()
        meta = {
            "attack": self.name,
            "mode": b.mode,
            "objective": b.objective,
            "encoder": b.encoder,
            "ban": b.ban,
            "banned_ids": int(len(banned)),
            "length": n,
            "budget": b.to_dict(),
            "safe_distance": safe_distance,
            "slots": [s.name for s in slots],
            "transfer": b.encoder == "original",
        }
        return AttackResult(
            target=target,
            prompts=[p for _, p, _ in runs],
            losses=[float(x) for x, _, _ in runs],
            history=runs[0][2],
            steps=steps_done,
            seconds=time.perf_counter() - start,
            meta=meta,
        )
