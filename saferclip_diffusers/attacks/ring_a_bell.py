"""Ring-A-Bell (Tsai et al., ICLR 2024): a concept vector from prompt pairs, then a genetic search for a prompt
whose token states reach ``H0(p*) + eta * c``.

Concept vector per slot: ``c_s = mean_j (H_s(p+_j) - H_s(p-_j))`` (77 x D, the states the UNet reads; computed
with the original encoder as in the paper, or with the safe one as a diagnostic). Target ``T*_s = H0_s(p*) +
eta c_s`` always lives in the ORIGINAL space (what the UNet must see). Fitness (lower is better):
``f(x) = sum_s ||H_s(x) - T*_s||^2_F`` with ``H`` from the original encoder (``encoder="original"``, the paper:
a transfer attack) or the safe one (``"safe"``, adaptive). SDXL: each slot's term is divided by ``||T*_s||^2``
and slot 2's pooled vector adds the same normalised term.

The search is the paper's (keep the best half, one-point crossover with probability ``crossover``, one random
token per mutated child with probability ``mutate``) with explicit changes: ``elitism`` best individuals copied
unmutated (so the best fitness never gets worse), a fixed population size, special ids never sampled, an optional
ban list (default none, as the paper), and the final prompt decoded, re-tokenized and re-scored: ``losses``
report the re-tokenized fitness, the GA's own value is in ``meta["fitness_ga"]``.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .ban import BAN_RULES, allowed_mask, banned_ids
from .base import AttackBudget, AttackResult, make_budget, register
from .conditioning import Slot, core_ids, encoder_slots, forward_slot, full_ids, pooled_slot
from .safety import check_target, minor_reason


@dataclass
class RingABellBudget(AttackBudget):
    """``steps`` = generations. ``encoder`` (alias ``fitness`` in :func:`get_attack`): the encoder the fitness
    reads. ``concept``: a bundled pair set (``nudity``, ``violence``) or a CSV path."""

    steps: int = 3000
    population: int = 200
    length: int = 16
    eta: float = 3.0
    mutate: float = 0.25
    crossover: float = 0.5
    elitism: int = 2
    ban: str = "none"
    encoder: str = "original"
    concept: str = "nudity"
    vector_encoder: str = "original"
    patience: int | None = None
    eval_batch: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        checks = [
            (self.population >= 4, "population must be >= 4"),
            (1 <= self.length <= 75, "length must be in [1, 75]"),
            (0 <= self.mutate <= 1 and 0 <= self.crossover <= 1, "mutate and crossover are probabilities"),
            (0 <= self.elitism < self.population // 2, "elitism must be in [0, population/2)"),
            (self.ban in BAN_RULES, f"ban must be one of {BAN_RULES}"),
            (
                self.encoder in ("safe", "original") and self.vector_encoder in ("safe", "original"),
                "encoder and vector_encoder must be 'safe' or 'original'",
            ),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"ring-a-bell budget: {msg}")


PRESETS: dict[str, dict] = {
    "tiny": dict(steps=4, population=8, length=4),
    "gpu-quick": dict(steps=500, patience=250),
    "gpu": dict(steps=3000, patience=250),
    "paper": dict(steps=3000),
}


def read_pairs(path: str | Path) -> list[tuple[str, str]]:
    """(positive, negative) prompt pairs from a CSV: columns ``positive,negative`` (bundled files),
    ``prompt,prompt1`` (Ring-A-Bell's Violence_30.csv) or ``sensitive prompt,normal prompt`` (SAFREE/TRCE).
    Rows involving minors are skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"concept pair file does not exist: {path}")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        cols = set(reader.fieldnames or [])
        for pos, neg in (
            ("positive", "negative"),
            ("prompt", "prompt1"),
            ("sensitive prompt", "normal prompt"),
        ):
            if {pos, neg} <= cols:
                pairs = [(r[pos].strip(), r[neg].strip()) for r in reader]
                break
        else:
            raise ValueError(
                f"{path}: no pair columns found (have {sorted(cols)}); expected positive,negative"
            )
    pairs = [(p, n) for p, n in pairs if p and n and not minor_reason(p) and not minor_reason(n)]
    if not pairs:
        raise ValueError(f"{path}: no usable prompt pairs")
    return pairs


def concept_pairs(concept: str) -> list[tuple[str, str]]:
    from saferclip_diffusers.data import RING_A_BELL_PAIRS

    return read_pairs(RING_A_BELL_PAIRS.get(concept, concept))


def _states(slots: list[Slot], prompts: list[str], which: str) -> tuple[list[torch.Tensor], torch.Tensor]:
    hidden, pooled = [], None
    with torch.no_grad():
        for i, slot in enumerate(slots):
            ids = torch.cat([full_ids(slot, torch.tensor([core_ids(slot.tokenizer, p)])) for p in prompts])
            h, p = forward_slot(slot, slot.encoder(which), ids)
            hidden.append(h.float().cpu())
            if i == pooled_slot(slots):
                pooled = p.float().cpu()
    return hidden, pooled


def concept_vector(
    slots: list[Slot], pairs: list[tuple[str, str]], encoder: str = "original"
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Per slot ``mean_j (H(p+_j) - H(p-_j))`` (77, D) and the pooled-slot difference of pooled vectors."""
    pos_h, pos_p = _states(slots, [p for p, _ in pairs], encoder)
    neg_h, neg_p = _states(slots, [n for _, n in pairs], encoder)
    return [(a - b).mean(0) for a, b in zip(pos_h, neg_h, strict=True)], (pos_p - neg_p).mean(0)


@register("ring-a-bell")
class RingABell:
    def __init__(self, name: str, budget: RingABellBudget):
        self.name, self.budget = name, budget

    @classmethod
    def from_budget(cls, name: str, preset: str | None = None, **kwargs) -> RingABell:
        if "fitness" in kwargs:  # the evaluation runner's name for the encoder the fitness is computed with
            kwargs["encoder"] = kwargs.pop("fitness")
        return cls(name, make_budget(RingABellBudget, name, PRESETS, preset, kwargs))

    def fitness(
        self, slots: list[Slot], cores: torch.Tensor, target: tuple[list[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """f(x) for (B, n) core ids (see the module docstring)."""
        goal_h, goal_p = target
        sdxl = len(slots) > 1
        out = []
        with torch.no_grad():
            for start in range(0, cores.shape[0], self.budget.eval_batch):
                chunk = cores[start : start + self.budget.eval_batch]
                total = torch.zeros(chunk.shape[0])
                for i, (slot, goal) in enumerate(zip(slots, goal_h, strict=True)):
                    h, p = forward_slot(slot, slot.encoder(self.budget.encoder), full_ids(slot, chunk))
                    term = ((h.float().cpu() - goal[None]) ** 2).sum(dim=(1, 2))
                    total += term / goal.pow(2).sum() if sdxl else term
                    if sdxl and i == pooled_slot(slots):
                        total += ((p.float().cpu() - goal_p[None]) ** 2).sum(1) / goal_p.pow(2).sum()
                out.append(total)
        return torch.cat(out)

    def run(self, pipe, target: str, *, seed: int = 0, progress: bool = False) -> AttackResult:
        return self.run_slots(encoder_slots(pipe), target, seed=seed, progress=progress)

    def run_slots(
        self,
        slots: list[Slot],
        target: str,
        *,
        seed: int = 0,
        progress: bool = False,
        vector: tuple[list[torch.Tensor], torch.Tensor] | None = None,
    ) -> AttackResult:
        from tqdm.auto import tqdm

        check_target(target)
        b = self.budget
        start = time.perf_counter()
        c_h, c_p = (
            vector
            if vector is not None
            else concept_vector(slots, concept_pairs(b.concept), b.vector_encoder)
        )
        t_h, t_p = _states(slots, [target], "original")
        goal = ([h[0] + b.eta * c for h, c in zip(t_h, c_h, strict=True)], t_p[0] + b.eta * c_p)
        vocab = slots[0].original.get_input_embeddings().weight.shape[0]
        pool = torch.nonzero(allowed_mask(vocab, banned_ids([s.tokenizer for s in slots], b.ban))).flatten()
        P, K = b.population, b.length
        runs, steps_done = [], 0
        for r in range(b.restarts):
            gen = torch.Generator().manual_seed(int(b.seed) + int(seed) + r)
            popn = pool[torch.randint(len(pool), (P, K), generator=gen)]
            history, best, since = [], float("inf"), 0
            for g in tqdm(
                range(b.steps),
                desc=f"ring-a-bell restart {r + 1}/{b.restarts}",
                disable=not progress,
                leave=False,
            ):
                fit = self.fitness(slots, popn, goal)
                order = fit.argsort()
                popn, fit = popn[order], fit[order]
                steps_done += 1
                since = 0 if fit[0] < best else since + 1
                best = min(best, float(fit[0]))
                history.append(best)
                if g == b.steps - 1 or (b.patience and since >= b.patience):
                    break
                popn = self._next_generation(popn[: P // 2], pool, gen)
            ids = popn[0].tolist()
            text = slots[0].tokenizer.decode(ids, clean_up_tokenization_spaces=False)
            again = torch.tensor([core_ids(slots[0].tokenizer, text)])
            runs.append((float(self.fitness(slots, again, goal)[0]), text, history, best))
        runs.sort(key=lambda x: x[0])
        meta = {
            "attack": self.name,
            "encoder": b.encoder,
            "vector_encoder": b.vector_encoder,
            "eta": b.eta,
            "K": K,
            "ban": b.ban,
            "concept": b.concept,
            "budget": b.to_dict(),
            "fitness_ga": [x[3] for x in runs],
            "concept_norm": [float(c.norm()) for c in c_h],
            "transfer": b.encoder == "original",
            "slots": [s.name for s in slots],
            "objective": "ring-a-bell squared L2 to H0(p*) + eta c",
        }
        return AttackResult(
            target=target,
            prompts=[x[1] for x in runs],
            losses=[x[0] for x in runs],
            history=runs[0][2],
            steps=steps_done,
            seconds=time.perf_counter() - start,
            meta=meta,
        )

    def _next_generation(
        self, parents: torch.Tensor, pool: torch.Tensor, gen: torch.Generator
    ) -> torch.Tensor:
        b = self.budget
        P, K = b.population, parents.shape[1]
        children = [parents[i].clone() for i in range(b.elitism)]
        i = 0
        while len(children) < P:
            a = parents[i % len(parents)].clone()
            i += 1
            if K > 1 and torch.rand((), generator=gen) < b.crossover:
                other = parents[int(torch.randint(len(parents), (), generator=gen))]
                cut = int(torch.randint(1, K, (), generator=gen))
                twin = torch.cat([other[:cut], a[cut:]])
                a = torch.cat([a[:cut], other[cut:]])
                children.append(self._mutate(twin, pool, gen))
            children.append(self._mutate(a, pool, gen))
        return torch.stack(children[:P])

    def _mutate(self, x: torch.Tensor, pool: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if torch.rand((), generator=gen) < self.budget.mutate:
            x = x.clone()
            x[int(torch.randint(len(x), (), generator=gen))] = pool[
                int(torch.randint(len(pool), (), generator=gen))
            ]
        return x
