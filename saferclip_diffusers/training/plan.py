"""Which items each epoch trains on, in which order, and their embeddings per micro-batch: the trainer's data plan (a mixin of :class:`~.trainer.Trainer`).

The sample order of epoch ``e`` is a permutation seeded by ``(seed, e)`` over the curriculum's open buckets; the
last global batch wraps around to the start of the order, so every process always gets full micro-batches.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .losses import BatchEmbeddings


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

    def embed_batch(self, unsafe_idx: np.ndarray, keep_idx: np.ndarray) -> dict[str, BatchEmbeddings]:
        """Live and frozen embeddings of a micro-batch for every encoder slot (also kept in ``batch_outputs``)."""
        d, dev = self.data, self.device
        u, k = torch.as_tensor(unsafe_idx), torch.as_tensor(keep_idx)
        hat, img_hat = self.targets.text[u], self.targets.image[u]
        texts = [d.unsafe_texts[i] for i in unsafe_idx] + [d.safe_texts[i] for i in keep_idx]
        text_inputs = {b.slot: b.tokenize(texts).to(dev) for b in self.bundles}
        images = {}
        for b in self.bundles:
            if b.vision is not None:
                paths = ([d.unsafe_images[i] for i in unsafe_idx] if d.unsafe_images else []) + (
                    [d.safe_images[i] for i in keep_idx] if d.safe_images else []
                )
                images[b.slot] = b.pixel_values(paths).to(dev)
        out = self.model(text=text_inputs, images=images or None)
        n, result = len(unsafe_idx), {}
        for b in self.bundles:
            o, f = out[b.slot], self.frozen[b.slot]
            get = lambda t, idx: t[idx].to(dev) if t is not None else None  # noqa: E731
            v_vs = v_v = None
            if o["image"] is not None:
                n_vs = n if d.unsafe_images else 0
                v_vs = o["image"][:n_vs] if n_vs else None
                v_v = o["image"][n_vs:] if d.safe_images else None
            h = o["hidden"]
            result[b.slot] = BatchEmbeddings(
                T_t=o["text"][n:],
                T_ts=o["text"][:n],
                T0_t=get(f.text_safe, k),
                T0_ts=get(f.text_unsafe, u),
                T0_hat=get(f.text_safe, hat),
                V_v=v_v,
                V_vs=v_vs,
                V0_v=get(f.image_safe, k),
                V0_vs=get(f.image_unsafe, u),
                V0_hat=get(f.image_safe, img_hat),
                H_t=h[n:] if h is not None else None,
                H_ts=h[:n] if h is not None else None,
                H0_t=get(f.hidden_safe, k),
                H0_hat=get(f.hidden_safe, hat),
            )
        self.batch_outputs = result
        return result
