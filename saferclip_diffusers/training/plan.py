"""Which items each epoch trains on, in which order: the trainer's data plan (a mixin of :class:`~.trainer.Trainer`).

The sample order of epoch ``e`` is a permutation seeded by ``(seed, e)`` over the curriculum's open buckets; the
last global batch wraps around to the start of the order, so every process always gets full micro-batches.
"""

from __future__ import annotations

import math

import numpy as np


class EpochPlan:
    """Uses the trainer's ``cfg``, ``split``, ``data``, ``curriculum``, ``targets`` and ``world``."""

    def epoch_plan(self, epoch: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Global micro-batches of epoch ``epoch``: (unsafe indices, preservation safe indices), each of size B*world."""
        items = self.split.train_unsafe[self.curriculum.active(epoch)]
        if len(items) == 0:
            return []
        order = items[np.random.default_rng([self.cfg.seed, epoch]).permutation(len(items))]
        gb = self.cfg.optim.batch_size * self.world
        n = math.ceil(len(order) / gb)
        order = np.resize(order, n * gb)  # wrap around to fill the last batch
        if self.data.paired:
            keep = self.data.pair[order]
        else:  # unpaired: cycle through the training pool for the preservation terms
            pool = self.split.train_safe[
                np.random.default_rng([self.cfg.seed, epoch, 1]).permutation(len(self.split.train_safe))
            ]
            keep = np.resize(pool, len(order))
        return [(order[i * gb : (i + 1) * gb], keep[i * gb : (i + 1) * gb]) for i in range(n)]

    def total_steps(self) -> int:
        per_epoch = [
            math.ceil(len(self.epoch_plan(e)) / self.cfg.optim.grad_accum)
            for e in range(1, self.cfg.optim.epochs + 1)
        ]
        total = sum(per_epoch)
        return min(total, self.cfg.optim.max_steps) if self.cfg.optim.max_steps else total

    def used_prompts(self) -> dict[str, list[str]]:
        """The captions training used: trained unsafe prompts; safe targets and preservation captions."""
        self.setup()
        unsafe, safe = set(), set(self.targets.text[self.split.train_unsafe].tolist())
        for epoch in range(1, self.cfg.optim.epochs + 1):
            for u, k in self.epoch_plan(epoch):
                unsafe.update(u.tolist())
                safe.update(k.tolist())
        return {
            "unsafe": [self.data.unsafe_texts[i] for i in sorted(unsafe)],
            "safe": [self.data.safe_texts[i] for i in sorted(safe)],
        }
