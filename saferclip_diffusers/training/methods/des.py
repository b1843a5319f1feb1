"""DES (arXiv 2501.18877, NeurIPS 2025; code amoeba04/des): full fine-tune of a text encoder on its token states.

Every embedding is the encoder's ``last_hidden_state`` padded to ``max_length`` tokens and flattened to one
[L*D] vector (what SD 1.x reads; DES's ``get_embeddings``). With ``E`` the live encoder and ``E0`` the original:

* codebook: ``E0(s)`` of every training safe caption; ``far(u)`` is the raw ``E0`` embedding of the entry
  **least** cosine-similar to ``E0(u)`` (DES's "most distant" safe embedding);
* concept direction ``d = vec E0(c) / ||vec E0(c)||`` (``c`` = ``des.concept_prompt``); target ``t_u = far(u) - gamma d``;
* ``L1 = mean[1 - cos(E(s), E0(s))] + mean[1 - cos(E(s) + gamma d, E0(s))]`` (safe preservation + ConceptAug);
* ``L2 = mean[1 - cos(E(u), t_u)]`` (unsafe redirection); ``L3 = 1 - cos(E(c), E0(""))`` (concept neutralisation);
* ``L = lambda L1 + (1 - lambda)(L2 + L3)``; DES's ``train.sh``: lambda 0.3, gamma 200, lr 1e-5, batch 128,
  2 epochs, AdamW over all parameters (``finetune: full``).

Targets are kept as codebook indices and ``E0(far(u))`` is recomputed per batch, so a CLIP-L codebook of
thousands of 77x768 states never has to sit in memory. CLIP is called without an attention mask (causal, as DES
and the pipelines do); the generic backbone (T5, sentence encoders) with it, as DES does for T5.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .base import Method

Tensor = torch.Tensor


def _cos_dist(a: Tensor, b: Tensor) -> Tensor:
    """``mean[1 - cos(a, b)]`` over flattened rows, computed as ``||a/|a| - b/|b|||^2 / 2`` (the same number, but
    exactly 0 for identical inputs and free of the cancellation of ``1 - cos`` near 0)."""
    a, b = F.normalize(a.flatten(1).float(), dim=-1), F.normalize(b.flatten(1).float(), dim=-1)
    return ((a - b).square().sum(-1) / 2).mean()


def safe_preservation(
    live_safe: Tensor, frozen_safe: Tensor, direction: Tensor, gamma: float
) -> tuple[Tensor, Tensor]:
    """DES's SEP (ablation id 1): ``(mean[1 - cos(E(s), E0(s))], mean[1 - cos(E(s) + gamma d, E0(s))])``."""
    live = live_safe.flatten(1).float()
    return _cos_dist(live, frozen_safe), _cos_dist(live + gamma * direction.flatten().float(), frozen_safe)


def unsafe_redirection(live_unsafe: Tensor, targets: Tensor) -> Tensor:
    """DES's UEN (ablation id 2): ``mean[1 - cos(E(u), t_u)]``."""
    return _cos_dist(live_unsafe, targets)


def concept_neutralisation(live_concept: Tensor, frozen_empty: Tensor) -> Tensor:
    """Ablation id 3: ``1 - cos(E(c), E0(""))``."""
    return _cos_dist(live_concept, frozen_empty)


def des_total(l1: Tensor, l2: Tensor, l3: Tensor, lambda_safe: float) -> Tensor:
    return lambda_safe * l1 + (1 - lambda_safe) * (l2 + l3)


@torch.no_grad()
def farthest(queries: Tensor, keys_normed: Tensor, chunk: int = 256) -> Tensor:
    """Index of the least cosine-similar key per query row (``keys_normed`` rows are unit vectors)."""
    out = []
    for start in range(0, queries.shape[0], chunk):
        q = F.normalize(queries[start : start + chunk].flatten(1).float(), dim=-1).to(keys_normed.dtype)
        out.append((q @ keys_normed.T).argmin(dim=1).cpu())
    return torch.cat(out)


class _Slot:
    """Per encoder: the frozen original, the tokenizer settings and the precomputed DES quantities."""

    def __init__(self, bundle: Any, trainer: Any, settings: Any):
        from ..models import load_towers

        self.bundle = bundle
        tok = bundle.towers.tokenizer
        self.max_length = settings.max_length or min(int(tok.model_max_length), 512)
        self.use_mask = bundle.settings.backbone == "transformers-mean"
        self.frozen = load_towers(
            bundle.settings, need_vision=False, allow_pickle=trainer.cfg.allow_pickle
        ).text
        self.frozen.requires_grad_(False).eval().to(trainer.device)

    def tokens(self, texts: list[str], device: torch.device) -> dict[str, Tensor]:
        enc = self.bundle.towers.tokenizer(
            list(texts),
            padding="max_length",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        out = {"input_ids": enc.input_ids.to(device)}
        if self.use_mask:
            out["attention_mask"] = enc.attention_mask.to(device)
        return out

    def states(self, model: torch.nn.Module, texts: list[str], device: torch.device) -> Tensor:
        return model(**self.tokens(texts, device)).last_hidden_state.flatten(1)

    @torch.no_grad()
    def frozen_states(self, texts: list[str], device: torch.device, batch: int = 256) -> Tensor:
        return torch.cat(
            [
                self.states(self.frozen, texts[i : i + batch], device).float()
                for i in range(0, len(texts), batch)
            ]
        )


class DES(Method):
    name = "des"

    def setup(self, trainer: Any) -> None:
        from tqdm.auto import tqdm

        if trainer.world > 1:
            raise ValueError(
                "method des runs on one process (its loss calls the unwrapped encoders); drop accelerate's "
                "--num_processes"
            )
        s, dev, data = trainer.cfg.des, trainer.device, trainer.data
        self.settings = s
        self.slots: dict[str, _Slot] = {}
        self.far: dict[str, Tensor] = {}
        self.direction: dict[str, Tensor] = {}
        self.empty: dict[str, Tensor] = {}
        safe_rows = np.asarray(trainer.split.train_safe)
        key_dtype = torch.float16 if dev.type == "cuda" else torch.float32
        for b in trainer.bundles:
            slot = self.slots[b.slot] = _Slot(b, trainer, s)
            concept = slot.frozen_states([s.concept_prompt], dev)
            self.direction[b.slot] = F.normalize(concept, dim=-1)[0]
            self.empty[b.slot] = slot.frozen_states([""], dev)[0]
            safe_texts = [data.safe_texts[i] for i in safe_rows]
            keys = torch.cat(
                [
                    F.normalize(slot.frozen_states(safe_texts[i : i + s.search_chunk], dev), dim=-1).to(
                        key_dtype
                    )
                    for i in tqdm(range(0, len(safe_texts), s.search_chunk), desc=f"DES codebook [{b.slot}]")
                ]
            )
            far = torch.cat(
                [
                    farthest(slot.frozen_states(data.unsafe_texts[i : i + s.search_chunk], dev), keys)
                    for i in range(0, len(data.unsafe_texts), s.search_chunk)
                ]
            )
            self.far[b.slot] = torch.as_tensor(safe_rows)[far]
            del keys

    def batch_loss(
        self, trainer: Any, unsafe_idx: np.ndarray, keep_idx: np.ndarray
    ) -> tuple[Tensor, dict[str, float]]:
        s, dev, data = self.settings, trainer.device, trainer.data
        model = trainer.accelerator.unwrap_model(trainer.model)
        unsafe = [data.unsafe_texts[i] for i in unsafe_idx]
        safe = [data.safe_texts[i] for i in keep_idx]
        total, logs = 0.0, {}
        for b in trainer.bundles:
            slot, n = self.slots[b.slot], len(unsafe)
            live = slot.states(model.text[b.slot], unsafe + safe + [s.concept_prompt], dev).float()
            far_texts = [data.safe_texts[i] for i in self.far[b.slot][torch.as_tensor(unsafe_idx)].tolist()]
            with torch.no_grad():
                frozen = slot.states(slot.frozen, safe + far_texts, dev).float()
            targets = frozen[len(safe) :] - s.gamma * self.direction[b.slot]
            sep, aug = safe_preservation(
                live[n : n + len(safe)], frozen[: len(safe)], self.direction[b.slot], s.gamma
            )
            uen = unsafe_redirection(live[:n], targets)
            nen = concept_neutralisation(live[-1:], self.empty[b.slot][None])
            loss = des_total(sep + aug, uen, nen, s.lambda_safe)
            total = total + b.settings.weight * loss
            prefix = f"{b.slot}/" if len(trainer.bundles) > 1 else ""
            logs.update(
                {
                    prefix + "des_safe": sep.item(),
                    prefix + "des_concept_aug": aug.item(),
                    prefix + "des_unsafe": uen.item(),
                    prefix + "des_concept": nen.item(),
                }
            )
        logs["loss"] = float(total.item())
        return total, logs
