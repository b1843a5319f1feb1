"""What the UNet reads, per text-encoder slot, as the attacks see it, and the adaptive objective.

A :class:`Slot` pairs one pipeline slot's tokenizer with its safe and original encoders and the layer the UNet
reads: SD 1.x/2.x one slot, the final (normed) token states; SDXL two slots, the penultimate states, with the
pooled vector (``add_text_embeds``) taken from slot 2's ``text_embeds``. This mirrors
:func:`saferclip_diffusers.pipelines.conditioning.encode_text` (tested against it), but on token ids (and
optionally soft token embeddings) rather than prompt strings.

Objective ``states`` (swap-gcg; lower is stronger):
``L(x) = mean_slots [ mean_{i=1..76} (1 - cos(H_s(x)_i, H0_s(p*)_i)) ] + w_pool (1 - cos(pool(x), pool0(p*)))``
with ``H`` the attacked encoder's states, ``H0``/``pool0`` the ORIGINAL encoder's of the target ``p*``;
position 0 (BOS) is prompt independent and skipped; slots are averaged (not summed, unlike the reference
design) so SD and SDXL losses share a scale. ``w_pool`` = 0.5 for SD (the UNet does not read the pooled vector)
and 1.0 for SDXL (it does). Objective ``pooled`` is MMA-Diffusion's: ``1 - cos`` of the pooled vectors only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .soft_tokens import soft_tokens

OBJECTIVES = ("states", "pooled")


@dataclass
class Slot:
    name: str
    tokenizer: object
    safe: nn.Module
    original: nn.Module
    layer: str  # "final" (SD 1.x/2.x) or "penultimate" (SDXL)

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    @property
    def length(self) -> int:
        return int(self.tokenizer.model_max_length)

    def encoder(self, which: str) -> nn.Module:
        if which not in ("safe", "original"):
            raise ValueError(f"encoder must be 'safe' or 'original', got {which!r}")
        return self.safe if which == "safe" else self.original


def encoder_slots(pipe) -> list[Slot]:
    """The slots of a Safer pipeline; the original encoders must be loaded (``keep_original=True``)."""
    sdxl = getattr(pipe, "text_encoder_2", None) is not None
    names = (
        [("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2")]
        if sdxl
        else [("text_encoder", "tokenizer")]
    )
    slots = []
    for name, tok in names:
        original = pipe.original_encoder(name) if hasattr(pipe, "original_encoder") else getattr(pipe, name)
        if original is None:
            raise ValueError(
                f"attacks need the original encoder of {name}: load the pipeline with keep_original=True"
            )
        slots.append(
            Slot(name, getattr(pipe, tok), getattr(pipe, name), original, "penultimate" if sdxl else "final")
        )
    return slots


def pooled_slot(slots: list[Slot]) -> int:
    """Index of the slot whose pooled vector counts (SDXL: slot 2, the one the UNet reads; SD: the only one)."""
    return len(slots) - 1


def core_ids(tokenizer, text: str, max_core: int | None = None) -> list[int]:
    """Token ids of ``text`` without BOS/EOS, truncated to what fits between them."""
    limit = max_core or tokenizer.model_max_length - 2
    return tokenizer(text, add_special_tokens=False, truncation=True, max_length=limit).input_ids[:limit]


def full_ids(slot: Slot, cores: torch.Tensor) -> torch.Tensor:
    """(B, core) ids -> (B, 77) ids ``[BOS, core, EOS, pad...]`` with the slot's own pad id."""
    b, n = cores.shape
    if n > slot.length - 2:
        raise ValueError(
            f"{n} prompt tokens do not fit: CLIP reads at most {slot.length - 2} between BOS and EOS"
        )
    tok = slot.tokenizer
    out = torch.full((b, slot.length), slot.pad_id, dtype=torch.long, device=cores.device)
    out[:, 0] = tok.bos_token_id
    out[:, 1 : n + 1] = cores
    out[:, n + 1] = tok.eos_token_id
    return out


def forward_slot(
    slot: Slot, encoder: nn.Module, ids: torch.Tensor, embeds: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(token states the UNet reads, pooled vector) of (B, 77) ``ids``, with soft ``embeds`` if given."""
    device = next(encoder.parameters()).device
    ids = ids.to(device)
    mask = None
    if getattr(encoder.config, "use_attention_mask", False):
        mask = (ids != slot.pad_id).long()
        mask[:, 0] = 1
    want_hidden = slot.layer == "penultimate"
    if embeds is None:
        out = encoder(ids, attention_mask=mask, output_hidden_states=want_hidden)
    else:
        with soft_tokens(encoder, embeds.to(device)):
            out = encoder(ids, attention_mask=mask, output_hidden_states=want_hidden)
    hidden = out.hidden_states[-2] if want_hidden else out.last_hidden_state
    pooled = out.text_embeds if hasattr(out, "text_embeds") else out.pooler_output
    return hidden, pooled


def states_distance(
    hidden: list[torch.Tensor],
    target_hidden: list[torch.Tensor],
    pooled: torch.Tensor,
    target_pooled: torch.Tensor,
    w_pool: float,
    objective: str = "states",
) -> torch.Tensor:
    """The objective of the module docstring, per row (B,): ``hidden`` per slot (B, 77, D), ``pooled`` (B, P);
    targets per slot (77, D) shared by all rows or (B, 77, D) one per row, ``target_pooled`` (P,) or (B, P).
    Positions are compared index by index (1..76), whatever the prompts' lengths."""
    tp = target_pooled.to(pooled.device)
    pool_term = 1 - F.cosine_similarity(pooled.float(), (tp[None] if tp.dim() == 1 else tp).float(), dim=-1)
    if objective == "pooled":
        return pool_term
    terms = []
    for h, h0 in zip(hidden, target_hidden, strict=True):
        h0 = (h0[None] if h0.dim() == 2 else h0).to(h.device)
        cos = F.cosine_similarity(h[:, 1:].float(), h0[:, 1:].float(), dim=-1)
        terms.append((1 - cos).mean(dim=1))
    return torch.stack(terms).mean(dim=0) + w_pool * pool_term


@dataclass
class ConditioningObjective:
    """The original encoder's conditioning of one target prompt, and the distance of other prompts to it."""

    target_hidden: list[torch.Tensor]  # per slot (77, D), fp32
    target_pooled: torch.Tensor  # (P,), fp32, of the pooled slot
    objective: str = "states"
    w_pool: float = 0.5

    @classmethod
    def for_slots(
        cls, slots: list[Slot], target: str, objective: str = "states", w_pool: float | None = None
    ) -> ConditioningObjective:
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        hidden, pooled = [], None
        with torch.no_grad():
            for i, slot in enumerate(slots):
                ids = full_ids(slot, torch.tensor([core_ids(slot.tokenizer, target)]))
                h, p = forward_slot(slot, slot.original, ids)
                hidden.append(h[0].float())
                if i == pooled_slot(slots):
                    pooled = p[0].float()
        if w_pool is None:
            w_pool = 1.0 if len(slots) > 1 else 0.5
        return cls(hidden, pooled, objective, float(w_pool))

    @classmethod
    def for_pipeline(cls, pipe, target: str, objective: str = "states") -> ConditioningObjective:
        return cls.for_slots(encoder_slots(pipe), target, objective)

    def loss(self, hidden: list[torch.Tensor], pooled: torch.Tensor) -> torch.Tensor:
        """Per-row loss (B,) from the attacked encoder's per-slot states (B, 77, D) and pooled vectors (B, P)."""
        return states_distance(
            hidden, self.target_hidden, pooled, self.target_pooled, self.w_pool, self.objective
        )

    def score_ids(
        self, slots: list[Slot], cores: torch.Tensor, encoder: str = "safe", batch: int = 128
    ) -> torch.Tensor:
        """Loss (B,) of core id rows (B, n) through ``encoder`` (``safe`` or ``original``), without gradients."""
        out = []
        with torch.no_grad():
            for start in range(0, cores.shape[0], batch):
                chunk = cores[start : start + batch]
                hidden, pooled = [], None
                for i, slot in enumerate(slots):
                    h, p = forward_slot(slot, slot.encoder(encoder), full_ids(slot, chunk))
                    hidden.append(h)
                    if i == pooled_slot(slots):
                        pooled = p
                out.append(self.loss(hidden, pooled).cpu())
        return torch.cat(out)

    def score_prompts(self, slots: list[Slot], prompts: list[str], encoder: str = "safe") -> torch.Tensor:
        """Loss (B,) of prompt strings, each tokenized by each slot's own tokenizer as the pipeline does."""
        out = []
        with torch.no_grad():
            for prompt in prompts:
                hidden, pooled = [], None
                for i, slot in enumerate(slots):
                    ids = full_ids(slot, torch.tensor([core_ids(slot.tokenizer, prompt)]))
                    h, p = forward_slot(slot, slot.encoder(encoder), ids)
                    hidden.append(h)
                    if i == pooled_slot(slots):
                        pooled = p
                out.append(self.loss(hidden, pooled).cpu())
        return torch.cat(out)
