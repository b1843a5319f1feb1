"""Adversarially robust SafeR-CLIP ("AdvSafeR"): an inner attack on the live encoder every few steps, whose
adversarial inputs are redirected to their source caption's proximity target with the SafeR loss.

Config section ``robust:`` (:class:`RobustSettings`; off by default; named configs ``tiny-robust``,
``sd15-robust``, ``sdxl-robust``). On an attack step, for a ``fraction`` of the batch's unsafe captions ``t*``:

* inner attack (AdvUnlearn-style, embedding space, no UNet): ``tokens`` soft tokens ``a`` placed right after
  BOS, in front of ``t*``, initialised to random vocabulary embeddings and moved by ``steps`` signed-gradient
  steps (``step_size`` x the median embedding-row norm) inside an l2 ball of ``radius`` x that norm around the
  init, to MINIMISE ``A(a) = (1 - cos(T(a+t*), T0(t*))) + hidden_weight (1 - cos(H(a+t*), H0(t*)))``: an input the
  current encoder still maps onto the unsafe meaning. The encoder runs in eval mode and only the soft tokens
  get gradients (``torch.autograd.grad``), so the model's parameters and ``.grad`` are untouched.
* outer term on those inputs, through the live encoder (train mode, with gradient):
  ``L_adv = w_redir d(T(a), T0(t̂)) + w_rel softplus(cos(T(a), T0(t*)) - cos(T(a), T0(t̂))) + w_hidden d(H(a), H0(t̂))``
  (``t̂`` = the source caption's own proximity target, SafeR's single own-counterpart negative), added to the
  SafeR loss as ``weight * L_adv``; the preservation terms are unchanged.

The attack is stateless: its randomness is seeded by (seed, global step, rank, batch rows) and it starts from a
fresh init each time, so a run resumed from a checkpoint recomputes exactly the same adversarial inputs (exact
resume needs no extra checkpoint state). ``T0``/``H0`` come from the run's frozen-embedding cache.

That is ``space: pooled`` (the default). ``space: states`` runs the same attack and terms on every token state
the UNet reads, swap-gcg's objective, against a reference forward of the original encoder
(:mod:`.robust_states`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..attacks.soft_tokens import embedding_matrix, soft_tokens, with_soft_rows
from .losses import cosine_distance, relative_redirection
from .settings import RobustSettings  # noqa: F401  (re-exported: the robust: config section)


def _generator(seed: int, step: int, rank: int, rows: np.ndarray) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}/{step}/{rank}/{','.join(map(str, rows.tolist()))}".encode()).hexdigest()
    return torch.Generator().manual_seed(int(digest[:15], 16))


def prefixed_ids(tokenizer, texts: list[str], k: int, full: bool = False) -> tuple[torch.Tensor, list[int]]:
    """Ids ``[BOS, k placeholders, caption, EOS, pad...]`` (captions truncated so that the whole fits in 77);
    padded to the longest caption, or to 77 with ``full`` (the token-state space compares all 77 positions)."""
    ids = tokenizer(
        list(texts),
        padding="max_length" if full else "longest",
        truncation=True,
        max_length=tokenizer.model_max_length - k,
        return_tensors="pt",
    ).input_ids
    vocab = tokenizer.get_vocab()
    placeholder = vocab.get("x</w>", min(set(vocab.values()) - set(tokenizer.all_special_ids)))
    out = torch.cat(
        [ids[:, :1], torch.full((ids.shape[0], k), placeholder, dtype=ids.dtype), ids[:, 1:]], dim=1
    )
    return out, list(range(1, k + 1))


def pooled_objective(
    model,
    goal_text: torch.Tensor,
    goal_hidden: torch.Tensor | None,
    eos: int,
    hidden_layer,
    hidden_weight: float,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``A(embeds, ids)`` per row in the pooled space (see the module docstring); a caption's candidate rows are
    consecutive (``repeat_interleave``)."""
    from .models import encode_text

    def objective(embeds: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        with soft_tokens(model, embeds):
            text, hidden = encode_text(model, input_ids, eos, hidden_layer)
        n = text.shape[0] // goal_text.shape[0]
        value = 1 - F.cosine_similarity(text.float(), goal_text.float().repeat_interleave(n, 0), dim=-1)
        if hidden is not None and goal_hidden is not None and hidden_weight:
            goal = goal_hidden.float().repeat_interleave(n, 0)
            value = value + hidden_weight * (1 - F.cosine_similarity(hidden.float(), goal, dim=-1))
        return value

    return objective


def inner_attack(
    model,
    ids: torch.Tensor,
    positions: list[int],
    objective: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    s: RobustSettings,
    gen: torch.Generator,
    special: list[int] | None = None,
) -> tuple[torch.Tensor, float, float]:
    """Adversarial prefix rows (B, k, D) minimising ``objective`` (per-row ``A``), and mean A before and after.

    ``embedding``: free soft tokens; ``token``: the embeddings of the discrete ids found (``special`` ids are
    never used)."""
    weight = embedding_matrix(model)
    was_training = model.training
    model.eval()

    def value_of(rows: torch.Tensor) -> torch.Tensor:
        return objective(with_soft_rows(model, ids, positions, rows), ids)

    try:
        init = weight.detach()[
            torch.randint(weight.shape[0], (ids.shape[0], len(positions)), generator=gen).to(weight.device)
        ]
        with torch.no_grad():
            first = float(value_of(init).mean())
        if s.attack == "token":
            adv = weight.detach()[token_attack(model, ids, positions, objective, list(special or []), s, gen)]
        else:
            scale = weight.detach().norm(dim=1).median()
            adv = init.clone()
            for _ in range(s.steps):
                adv.requires_grad_(True)
                (grad,) = torch.autograd.grad(value_of(adv).sum(), adv)
                with torch.no_grad():
                    adv = adv - s.step_size * scale * grad.sign()
                    delta = adv - init
                    adv = init + delta * (
                        s.radius * scale / delta.norm(dim=-1, keepdim=True).clamp_min(1e-12)
                    ).clamp(max=1.0)
        with torch.no_grad():
            last = float(value_of(adv).mean())
    finally:
        model.train(was_training)
    return adv.detach(), first, last


def token_attack(
    model,
    ids: torch.Tensor,
    positions: list[int],
    objective: Callable,
    special: list[int],
    s: RobustSettings,
    gen: torch.Generator,
) -> torch.Tensor:
    """Discrete prefix ids (B, k) lowering ``objective`` (GCG-style; see :class:`RobustSettings`)."""
    weight = embedding_matrix(model)
    vocab, (rows, k) = weight.shape[0], (ids.shape[0], len(positions))
    allowed = torch.ones(vocab, dtype=torch.bool)
    allowed[special] = False
    pool = torch.nonzero(allowed).flatten()
    adv = pool[torch.randint(len(pool), (rows, k), generator=gen)].to(ids.device)
    pos = torch.as_tensor(positions, device=ids.device)
    current = None
    for _ in range(s.steps):
        one_hot = F.one_hot(adv, vocab).to(weight.dtype).requires_grad_(True)
        real = ids.index_copy(1, pos, adv)
        value = objective(with_soft_rows(model, real, positions, one_hot @ weight), real)
        current = value.detach() if current is None else current
        (grad,) = torch.autograd.grad(value.sum(), one_hot)
        grad[..., ~allowed.to(grad.device)] = float("inf")
        top = (-grad).topk(min(s.top_k, len(pool)), dim=-1).indices  # (B, k, top_k)
        where = torch.arange(s.candidates) % k
        pick = torch.randint(top.shape[-1], (rows, s.candidates), generator=gen).to(ids.device)
        cand = adv[:, None, :].repeat(1, s.candidates, 1)
        cand[:, torch.arange(s.candidates), where] = top[:, where, :].gather(-1, pick[..., None]).squeeze(-1)
        flat = cand.reshape(rows * s.candidates, k)
        full = ids.repeat_interleave(s.candidates, 0).index_copy(1, pos, flat)
        with torch.no_grad():
            scores = objective(embedding_matrix(model)[full], full).view(rows, s.candidates)
        best, j = scores.min(dim=1)
        better = best < current
        adv = torch.where(better[:, None], cand[torch.arange(rows), j], adv)
        current = torch.where(better, best, current)
    return adv


def _pooled_outer(trainer, b, model, ids, u, hat) -> torch.Tensor:
    """The pooled-space outer term (module docstring), inside the adversarial inputs' ``soft_tokens`` context."""
    from .models import encode_text

    s, f, dev, layer = trainer.cfg.robust, trainer.frozen[b.slot], trainer.device, b.settings.hidden_layer
    text, hidden = encode_text(model, ids, b.eos_token_id, layer)
    t0_hat, t0_ts = f.text_safe[hat].to(dev), f.text_unsafe[u].to(dev)
    loss = s.w_redir * cosine_distance(text, t0_hat) + s.w_rel * relative_redirection(text, t0_ts, t0_hat)
    w_hidden = s.w_hidden if s.w_hidden is not None else (1.0 if layer is not None else 0.0)
    if w_hidden and hidden is not None and f.hidden_safe is not None:
        loss = loss + w_hidden * cosine_distance(hidden, f.hidden_safe[hat].to(dev))
    return loss


def robust_loss(
    trainer, unsafe_idx: np.ndarray, keep_idx: np.ndarray, outputs: dict
) -> dict[str, torch.Tensor]:
    """``Trainer.extra_losses`` callable: ``{"robust_adv[/slot]": weight * L_adv}`` on attack steps, else {}."""
    from .models import encode_text
    from .robust_states import StatesSpace

    s: RobustSettings = trainer.cfg.robust
    step = trainer.state["global_step"]
    if not s.active(step, trainer.total_steps()) or len(unsafe_idx) == 0:
        return {}
    gen = _generator(trainer.cfg.seed, step, trainer.rank, np.asarray(unsafe_idx))
    n_rows = max(1, int(math.ceil(s.fraction * len(unsafe_idx))))
    rows = np.sort(torch.randperm(len(unsafe_idx), generator=gen)[:n_rows].numpy())
    u = torch.as_tensor(np.asarray(unsafe_idx)[rows])
    hat = trainer.targets.text[u]
    texts = [trainer.data.unsafe_texts[i] for i in u.tolist()]
    states = s.space == "states"
    model_all = trainer.accelerator.unwrap_model(trainer.model)
    terms: dict[str, torch.Tensor] = {}
    for b in trainer.bundles:
        model, f, dev = model_all.text[b.slot], trainer.frozen[b.slot], trainer.device
        ids, positions = prefixed_ids(b.towers.tokenizer, texts, s.tokens, full=states)
        ids = ids.to(dev)
        layer = b.settings.hidden_layer
        if states:
            space = StatesSpace(trainer, b, model, texts, [trainer.data.safe_texts[i] for i in hat.tolist()])
            objective = space.objective()
        else:
            h0_ts = f.hidden_unsafe[u].to(dev) if f.hidden_unsafe is not None and layer is not None else None
            goal = f.text_unsafe[u].to(dev)
            objective = pooled_objective(model, goal, h0_ts, b.eos_token_id, layer, s.hidden_weight)
        special = list(b.towers.tokenizer.all_special_ids)
        adv, _, _ = inner_attack(model, ids, positions, objective, s, gen, special)
        with soft_tokens(model, with_soft_rows(model, ids, positions, adv)):
            loss = space.outer(ids) if states else _pooled_outer(trainer, b, model, ids, u, hat)
        if s.preserve and len(keep_idx):
            keep = torch.as_tensor(np.asarray(keep_idx)[rows % len(keep_idx)])
            safe_texts = [trainer.data.safe_texts[i] for i in keep.tolist()]
            sids, spos = prefixed_ids(b.towers.tokenizer, safe_texts, s.tokens, full=states)
            sids = sids.to(dev)
            weight = embedding_matrix(model).detach()
            rand = weight[torch.randint(weight.shape[0], (len(safe_texts), s.tokens), generator=gen).to(dev)]
            goal = space.reference(safe_texts) if states else None
            with soft_tokens(model, with_soft_rows(model, sids, spos, rand)):
                if states:
                    kept = space.preserve(goal, sids)
                else:
                    safe_text, _ = encode_text(model, sids, b.eos_token_id, None)
                    kept = cosine_distance(safe_text, f.text_safe[keep].to(dev))
            loss = loss + s.preserve * kept
        terms["robust_adv" + (f"/{b.slot}" if len(trainer.bundles) > 1 else "")] = s.weight * loss
    return terms


def robust_losses(cfg) -> list[Callable]:
    """The ``Trainer.extra_losses`` this config asks for (empty unless ``robust.enabled``)."""
    return [robust_loss] if cfg.robust.enabled else []
