"""Robust training in token-state space (``robust.space: states``): the space the adaptive attack uses.

``swap-gcg`` matches every token state the UNet reads (:mod:`saferclip_diffusers.attacks.conditioning`,
objective ``states``). Here the inner attack and the outer term use that same distance,
:func:`~saferclip_diffusers.attacks.conditioning.states_distance` (one implementation), per encoder slot:

``D(x, y) = mean_{i=1..76} (1 - cos(H(x)_i, H0(y)_i)) + w_pool (1 - cos(pool(x), pool0(y)))``

with ``H``/``pool`` the LIVE encoder's states (the layer the UNet reads) and pooled vector, ``H0``/``pool0`` the
ORIGINAL encoder's, from a reference forward (LoRA: the live network with its adapters disabled, through
:func:`~.models.reference_towers`; full fine-tuning: one frozen copy loaded once per trainer and kept, since the
trainer holds no frozen text tower then). ``w_pool`` is 0.5 for a one-encoder (SD) config, as in swap-gcg; with
two encoders (SDXL) it is 1.0 on ``text_encoder_2`` (whose pooled vector the UNet reads) and 0 on the other. The
pooled vector is the one swap-gcg sees in the pipeline: SD's ``CLIPTextModel`` pools without projection (the final
state at the first end-of-text token, taken here from the trained tower's states), SDXL's ``text_encoder_2`` gives
the projected ``text_embeds``, a mean-pooled backbone (``transformers-mean``) its masked mean ``text_embeds``.

* inner attack: prefix ``a`` minimising ``A(a) = D(a + t*, t*)``;
* outer term: ``w_redir D(a + t*, t̂) + w_rel softplus(D(a + t*, t̂) - D(a + t*, t*))`` (SafeR's relative term
  with ``-D`` as the similarity, so with plain cosine distances it is exactly ``softplus(cos(q, n) - cos(q, p))``;
  its only negative is the original's states of ``t*``); ``preserve``: ``D(r + t, t)`` on prefixed safe captions.

Position alignment follows swap-gcg's prefix mode: inputs are ``[BOS, a_1..a_k, caption, EOS, pad..]`` padded to
77, targets ``[BOS, caption, EOS, pad..]`` padded to 77, and position ``i`` is compared with position ``i``
(1..76), so the prefix shifts the caption against its target exactly as it does in the attack's loss.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from ..attacks.conditioning import Slot, forward_slot, states_distance
from ..attacks.soft_tokens import soft_tokens

_FULL_REFERENCES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def states_layer(setting: str, slots: list[str]) -> str:
    """``final`` or ``penultimate``: the token states the UNet reads (``auto``: penultimate for SDXL configs)."""
    if setting != "auto":
        return setting
    return "penultimate" if "text_encoder_2" in slots else "final"


def pool_weight(slot: str, slots: list[str]) -> float:
    """swap-gcg's ``w_pool`` for one slot's term (see the module docstring)."""
    if len(slots) == 1:
        return 0.5
    return 1.0 if slot == "text_encoder_2" else 0.0


@contextlib.contextmanager
def reference_text(trainer, bundle) -> Iterator[torch.nn.Module]:
    """The ORIGINAL text encoder of ``bundle`` in eval mode under ``no_grad`` (never the live trained weights)."""
    from .models import load_towers, reference_towers

    if trainer.cfg.finetune == "lora":
        with reference_towers(bundle, trainer.cfg) as (text0, _):
            yield text0
        return
    cache = _FULL_REFERENCES.setdefault(trainer, {})
    if bundle.slot not in cache:
        fresh = load_towers(bundle.settings, need_vision=False, allow_pickle=trainer.cfg.allow_pickle)
        cache[bundle.slot] = fresh.text.requires_grad_(False).eval().to(trainer.device)
    with torch.no_grad():
        yield cache[bundle.slot]


def full_ids(tokenizer, texts: list[str]) -> torch.Tensor:
    """``[BOS, caption, EOS, pad..]`` padded to the model length (77): the targets' layout."""
    n = tokenizer.model_max_length
    return tokenizer(
        list(texts), padding="max_length", truncation=True, max_length=n, return_tensors="pt"
    ).input_ids


class StatesSpace:
    """Inner objective, outer term and preservation term of one encoder slot in token-state space."""

    def __init__(self, trainer, bundle, model, unsafe_texts: list[str], target_texts: list[str]):
        s = trainer.cfg.robust
        slots = [b.slot for b in trainer.bundles]
        self.trainer, self.bundle, self.model, self.s = trainer, bundle, model, s
        self.slot = Slot(bundle.slot, bundle.towers.tokenizer, model, model, states_layer(s.layer, slots))
        self.w_pool = pool_weight(bundle.slot, slots)
        # SD: the pipeline's CLIPTextModel pools without projection; a mean-pooled backbone's pooled vector is
        # its own text_embeds (the masked mean), never the state at [SEP]/</s>
        self.eos_pooled = len(slots) == 1 and bundle.settings.backbone != "transformers-mean"
        self.unsafe = self.reference(unsafe_texts)  # H0(t*), pool0(t*)
        self.target = self.reference(target_texts)  # H0(t̂), pool0(t̂)

    def _forward(self, encoder, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, pooled = forward_slot(self.slot, encoder, ids)
        if self.eos_pooled:
            eos = (ids == self.bundle.eos_token_id).int().argmax(dim=1)
            final = hidden if self.slot.layer == "final" else encoder(ids).last_hidden_state
            pooled = final[torch.arange(ids.shape[0], device=ids.device), eos]
        return hidden, pooled

    def reference(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = full_ids(self.bundle.towers.tokenizer, texts).to(self.trainer.device)
        with reference_text(self.trainer, self.bundle) as text0:
            hidden, pooled = self._forward(text0, ids)
        return hidden.detach().float(), pooled.detach().float()

    def live(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Live states of ``ids`` (soft tokens, if any, come from the caller's ``soft_tokens`` context)."""
        return self._forward(self.model, ids)

    def distance(self, live: tuple[torch.Tensor, torch.Tensor], goal: tuple[torch.Tensor, torch.Tensor]):
        (h, p), (h0, p0) = live, goal
        n = h.shape[0] // h0.shape[0]  # candidate rows of one caption are consecutive
        h0, p0 = h0.repeat_interleave(n, 0), p0.repeat_interleave(n, 0)
        return states_distance([h], [h0], p, p0, self.w_pool)

    def objective(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """``A(embeds, ids)`` per row: the inner attack's objective ``D(a + t*, t*)``."""

        def value(embeds: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
            with soft_tokens(self.model, embeds):
                return self.distance(self.live(ids), self.unsafe)

        return value

    def outer(self, ids: torch.Tensor) -> torch.Tensor:
        """The outer term on the adversarial inputs (called inside their ``soft_tokens`` context)."""
        live = self.live(ids)
        to_target = self.distance(live, self.target)
        to_unsafe = self.distance(live, self.unsafe)
        return (self.s.w_redir * to_target + self.s.w_rel * F.softplus(to_target - to_unsafe)).mean()

    def preserve(self, goal: tuple[torch.Tensor, torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
        """``D(r + t, t)`` of prefixed safe captions, ``goal = reference(t)`` computed BEFORE entering their
        ``soft_tokens`` context (with LoRA the reference is the same network, and the hook would reach it)."""
        return self.distance(self.live(ids), goal).mean()
