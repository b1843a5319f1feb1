"""SafeR-CLIP and Safe-CLIP losses, one function per term, in the papers' notation.

Notation (Safe-CLIP, ECCV 2024; SafeR-CLIP, AAAI 2026): ``t`` safe caption, ``t*`` unsafe caption, ``v`` safe
image, ``v*`` unsafe image; ``T``/``V`` the trainable text/image encoders, ``T0``/``V0`` the frozen originals;
``t̂``/``v̂`` the redirection target (SafeR-CLIP: the nearest safe caption in T0 space and its image; Safe-CLIP:
the sample's paired safe caption and image). All terms act on the projected pooled embeddings
(``text_embeds`` / ``image_embeds``); cosines are of L2-normalised vectors; every term is a batch mean.

Text-only training (captions, no images). Each cross-modal term needs frozen image embeddings; without them it
is replaced by a text-only term that does real work, or dropped (our design, not from either paper; numbers in
``docs/training-text-only.md``). An earlier version fed the frozen *text* embedding of the same caption in place of
the frozen image embedding: that made the cross-modal preservation term ``InfoNCE(T(t), T0(t))`` at logit scale
100, which is saturated (about 0 whenever the batch's other captions have cosine <= 0.8), so it was dead weight.

=====================  =============================  ===================================================
with images            text-only replacement           why
=====================  =============================  ===================================================
``pres_text_cross``    ``pres_text_nbr``              keeps each safe caption's *neighbourhood*: KL between
(SafeR) / ``S_Vref``   (SafeR) / ``S_nbr`` (Safe)     the frozen and live similarity distributions over the
(Safe-CLIP)                                           batch's other safe captions (the caption itself left
                                                      out, so the term is not saturated)
``rel_text``           ``rel_text_uni``               the relative loss with frozen *text* keys: its only
                                                      negative is the prompt's own frozen unsafe embedding
``U_Vref``             ``U_Tref``                     Safe-CLIP's in-batch InfoNCE toward the frozen text
                                                      target (not saturated: T(t*) starts far from T0(t̂))
=====================  =============================  ===================================================

Both methods combine their terms with Safe-CLIP's normalisation ``L = sum_k (w_k / sum w) * l_k / n`` over the
``n`` active terms (Safe-CLIP: 8 terms, ``sum w = 1.75``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

SAFECLIP_LOGIT_SCALE = 100.00298144563507  # exp(4.6052): Safe-CLIP's fixed InfoNCE scale

#: Safe-CLIP's 8 terms in its code order with its released weights (0.1, 0.1, 0.1, 0.2, 0.25, 0.25, 0.25, 0.5).
SAFECLIP_WEIGHTS: dict[str, float] = {
    "text_safe": 0.1,  # preservation-1: d(T(t), T0(t))
    "text_nsfw": 0.1,  # redirection-2: d(T(t*), T0(t̂))
    "vision_safe": 0.1,  # preservation-1: d(V(v), V0(v))
    "vision_nsfw": 0.2,  # redirection-2: d(V(v*), V0(v̂))
    "S_Vref": 0.25,  # preservation-2: InfoNCE(T(t), V0(v))
    "U_Vref": 0.25,  # redirection-1: InfoNCE(T(t*), V0(v̂))
    "V_Sref": 0.25,  # preservation-2: InfoNCE(T0(t), V(v))
    "G_Sref": 0.5,  # redirection-1: InfoNCE(T0(t̂), V(v*))
    # text-only replacements (no images; our choice, same slot weights as the terms they replace)
    "S_nbr": 0.25,  # neighbourhood KL of T(t) over the batch's other frozen safe captions (S_Vref's weight)
    "U_Tref": 0.25,  # InfoNCE(T(t*), T0(t̂)) with in-batch negatives
}

#: SafeR-CLIP terms. The paper's weights were not available; these reuse Safe-CLIP's pattern, with the relative
#: terms in the redirection-1 slots (0.25 text, 0.5 image). Override with ``loss.weights``.
SAFERCLIP_WEIGHTS: dict[str, float] = {
    "pres_text": 0.1,  # d(T(t), T0(t))
    "redir_text": 0.1,  # proximity uni-modal redirection: d(T(t*), T0(t̂))
    "pres_image": 0.1,  # d(V(v), V0(v))
    "redir_image": 0.2,  # proximity uni-modal redirection: d(V(v*), V0(v̂))
    "pres_text_cross": 0.25,  # InfoNCE(T(t), V0(v))
    "rel_text": 0.25,  # softplus(cos(T(t*), V0(v*)) - cos(T(t*), V0(v̂)))
    "pres_image_cross": 0.25,  # InfoNCE(T0(t), V(v))
    "rel_image": 0.5,  # softplus(cos(V(v*), T0(t*)) - cos(V(v*), T0(t̂)))
    # text-only replacements (no images; our choice, same slot weights as the terms they replace)
    "pres_text_nbr": 0.05,  # neighbourhood KL (ours; 0.25 blocked all redirection on tiny models: docs/training.md)
    "rel_text_uni": 0.25,  # softplus(cos(T(t*), T0(t*)) - cos(T(t*), T0(t̂)))
}

#: Terms that need frozen image embeddings, and their text-only replacements.
TEXT_ONLY_REPLACEMENTS: dict[str, str] = {
    "pres_text_cross": "pres_text_nbr",
    "rel_text": "rel_text_uni",
    "S_Vref": "S_nbr",
    "U_Vref": "U_Tref",
}


def default_weights(method: str) -> dict[str, float]:
    if method == "saferclip":
        return dict(SAFERCLIP_WEIGHTS)
    if method == "safeclip":
        return dict(SAFECLIP_WEIGHTS)
    raise ValueError(f"unknown method {method!r}: use 'saferclip' or 'safeclip'")


# ------------------------------------------------------------------------------------------- primitives


def cosine_distance(a: Tensor, b: Tensor) -> Tensor:
    """``d(a, b) = mean_i (1 - cos(a_i, b_i))`` (Safe-CLIP's ``CosineDistance``, batch-averaged)."""
    return (1 - F.cosine_similarity(a.float(), b.float(), dim=-1)).mean()


def info_nce(a: Tensor, b: Tensor, logit_scale: float = SAFECLIP_LOGIT_SCALE) -> Tensor:
    """Symmetric InfoNCE with in-batch negatives and a fixed scale (Safe-CLIP's ``CLIPLoss_Positive``).

    ``0.5 * [CE(s * â b̂ᵀ, I) + CE(s * b̂ âᵀ, I)]`` where row ``i`` of ``a`` is positive with row ``i`` of ``b``.
    """
    a = F.normalize(a.float(), dim=-1)
    b = F.normalize(b.float(), dim=-1)
    logits = logit_scale * a @ b.T
    labels = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def relative_redirection(query: Tensor, own_unsafe: Tensor, target: Tensor, scale: float = 1.0) -> Tensor:
    """SafeR-CLIP's relative redirection: ``mean_i softplus(s * (cos(q_i, n_i) - cos(q_i, p_i)))``.

    ``q`` is the trainable embedding of the unsafe input, ``n`` the frozen embedding of its *own* unsafe
    counterpart (the only negative), ``p`` the frozen embedding of its proximal safe target. ``s = 1`` is the
    paper's equation; no other sample of the batch enters the term.
    """
    q = query.float()
    return F.softplus(
        scale
        * (
            F.cosine_similarity(q, own_unsafe.float(), dim=-1)
            - F.cosine_similarity(q, target.float(), dim=-1)
        )
    ).mean()


NEIGHBOUR_SCALE = 10.0  # our choice: at CLIP's 100 the neighbour distribution is one-hot (saturated again)


def neighbourhood_kl(live: Tensor, frozen: Tensor, logit_scale: float = NEIGHBOUR_SCALE) -> Tensor:
    """Neighbourhood preservation: ``mean_i KL(P0_i || P_i)`` over the *other* rows of the batch.

    ``P0_i = softmax_{j != i}(s * cos(f_i, f_j))`` (frozen ``f``) and ``P_i = softmax_{j != i}(s * cos(l_i, f_j))``
    (live ``l``): 0 exactly when every caption keeps its similarity profile to the others; the caption's own
    frozen embedding is left out, so unlike ``InfoNCE(T(t), T0(t))`` the term does not saturate. Needs >= 3 rows.
    ``s`` defaults to 10 (``loss.neighbour_scale``): caption cosines spread over a few tenths, so at CLIP's 100 both
    distributions are one-hot on the nearest neighbour and the term would be 0 until that neighbour changes.
    """
    f = F.normalize(frozen.float(), dim=-1)
    lv = F.normalize(live.float(), dim=-1)
    n = f.shape[0]
    if n < 3:
        raise ValueError(f"neighbourhood preservation needs at least 3 captions per batch, got {n}")
    off = ~torch.eye(n, dtype=torch.bool, device=f.device)
    ref = (logit_scale * f @ f.T)[off].view(n, n - 1)
    cur = (logit_scale * lv @ f.T)[off].view(n, n - 1)
    return F.kl_div(
        F.log_softmax(cur, dim=-1), F.log_softmax(ref, dim=-1), log_target=True, reduction="batchmean"
    )


# ------------------------------------------------------------------------------------------- batches


@dataclass
class BatchEmbeddings:
    """One batch of embeddings: live (trainable) ones and frozen (cached) ones, ``None`` where absent.

    Live: ``T_t`` = T(t), ``T_ts`` = T(t*), ``V_v`` = V(v), ``V_vs`` = V(v*); frozen: ``T0_t``, ``T0_ts``,
    ``T0_hat`` = T0(t̂), ``V0_v``, ``V0_vs``, ``V0_hat`` = V0(v̂); hidden-state pools (mean of the token states
    the diffusion model reads): ``H_t``, ``H_ts`` live, ``H0_t``, ``H0_hat`` frozen.
    """

    T_t: Tensor
    T_ts: Tensor
    T0_t: Tensor
    T0_ts: Tensor
    T0_hat: Tensor
    V_v: Tensor | None = None
    V_vs: Tensor | None = None
    V0_v: Tensor | None = None
    V0_vs: Tensor | None = None
    V0_hat: Tensor | None = None
    H_t: Tensor | None = None
    H_ts: Tensor | None = None
    H0_t: Tensor | None = None
    H0_hat: Tensor | None = None


def saferclip_terms(
    e: BatchEmbeddings,
    logit_scale: float = SAFECLIP_LOGIT_SCALE,
    relative_scale: float = 1.0,
    skip: frozenset[str] = frozenset(),
    neighbour_scale: float = NEIGHBOUR_SCALE,
) -> dict[str, Tensor]:
    """SafeR-CLIP's terms that the batch supports (image terms need the live image tower and the images)."""
    terms: dict[str, Tensor] = {}
    want = lambda name: name not in skip  # noqa: E731
    if want("pres_text"):
        terms["pres_text"] = cosine_distance(e.T_t, e.T0_t)
    if want("redir_text"):
        terms["redir_text"] = cosine_distance(e.T_ts, e.T0_hat)
    if e.V0_v is not None:
        if want("pres_text_cross"):
            terms["pres_text_cross"] = info_nce(e.T_t, e.V0_v, logit_scale)
    elif want("pres_text_nbr") and e.T_t.shape[0] >= 3:
        terms["pres_text_nbr"] = neighbourhood_kl(e.T_t, e.T0_t, neighbour_scale)
    if e.V0_vs is not None and e.V0_hat is not None:
        if want("rel_text"):
            terms["rel_text"] = relative_redirection(e.T_ts, e.V0_vs, e.V0_hat, relative_scale)
    elif want("rel_text_uni"):
        terms["rel_text_uni"] = relative_redirection(e.T_ts, e.T0_ts, e.T0_hat, relative_scale)
    if e.V_v is not None and e.V0_v is not None:
        if want("pres_image"):
            terms["pres_image"] = cosine_distance(e.V_v, e.V0_v)
        if want("pres_image_cross"):
            terms["pres_image_cross"] = info_nce(e.T0_t, e.V_v, logit_scale)
    if e.V_vs is not None:
        if want("redir_image") and e.V0_hat is not None:
            terms["redir_image"] = cosine_distance(e.V_vs, e.V0_hat)
        if want("rel_image"):
            terms["rel_image"] = relative_redirection(e.V_vs, e.T0_ts, e.T0_hat, relative_scale)
    return terms


def safeclip_terms(
    e: BatchEmbeddings,
    logit_scale: float = SAFECLIP_LOGIT_SCALE,
    relative_scale: float = 1.0,
    skip: frozenset[str] = frozenset(),
    neighbour_scale: float = NEIGHBOUR_SCALE,
) -> dict[str, Tensor]:
    """Safe-CLIP's 8 terms (code names), those the batch supports. ``t̂`` is the paired safe caption."""
    del relative_scale
    terms: dict[str, Tensor] = {}
    want = lambda name: name not in skip  # noqa: E731
    if want("text_safe"):
        terms["text_safe"] = cosine_distance(e.T_t, e.T0_t)
    if want("text_nsfw"):
        terms["text_nsfw"] = cosine_distance(e.T_ts, e.T0_hat)
    if e.V0_v is not None:
        if want("S_Vref"):
            terms["S_Vref"] = info_nce(e.T_t, e.V0_v, logit_scale)
    elif want("S_nbr") and e.T_t.shape[0] >= 3:
        terms["S_nbr"] = neighbourhood_kl(e.T_t, e.T0_t, neighbour_scale)
    if e.V0_hat is not None:
        if want("U_Vref"):
            terms["U_Vref"] = info_nce(e.T_ts, e.V0_hat, logit_scale)
    elif want("U_Tref"):
        terms["U_Tref"] = info_nce(e.T_ts, e.T0_hat, logit_scale)
    if e.V_v is not None and e.V0_v is not None:
        if want("vision_safe"):
            terms["vision_safe"] = cosine_distance(e.V_v, e.V0_v)
        if want("V_Sref"):
            terms["V_Sref"] = info_nce(e.T0_t, e.V_v, logit_scale)
    if e.V_vs is not None:
        if want("vision_nsfw") and e.V0_hat is not None:
            terms["vision_nsfw"] = cosine_distance(e.V_vs, e.V0_hat)
        if want("G_Sref"):
            terms["G_Sref"] = info_nce(e.T0_hat, e.V_vs, logit_scale)
    return terms


def hidden_state_terms(e: BatchEmbeddings) -> dict[str, Tensor]:
    """Optional terms on pooled token states (what the UNet reads): ``d(H(t*), H0(t̂))`` and ``d(H(t), H0(t))``."""
    if e.H_t is None or e.H_ts is None or e.H0_t is None or e.H0_hat is None:
        return {}
    return {"hidden_redir": cosine_distance(e.H_ts, e.H0_hat), "hidden_pres": cosine_distance(e.H_t, e.H0_t)}


def combine(terms: dict[str, Tensor], weights: dict[str, float]) -> Tensor:
    """Safe-CLIP's normalisation over the active terms: ``sum_k (w_k / sum w) * l_k / n``."""
    active = {k: v for k, v in terms.items() if weights.get(k, 0.0) != 0.0}
    if not active:
        raise ValueError(f"no active loss term: computed {sorted(terms)}, weights {weights}")
    total_w = sum(weights[k] for k in active)
    return sum(weights[k] / total_w * v for k, v in active.items()) / len(active)


def method_loss(
    method: str,
    e: BatchEmbeddings,
    weights: dict[str, float],
    logit_scale: float = SAFECLIP_LOGIT_SCALE,
    relative_scale: float = 1.0,
    hidden_weight: float = 0.0,
    neighbour_scale: float = NEIGHBOUR_SCALE,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The total loss of ``method`` on one encoder's batch, and its individual terms (for logging)."""
    skip = frozenset(k for k, w in weights.items() if w == 0.0)
    fn = saferclip_terms if method == "saferclip" else safeclip_terms
    terms = fn(e, logit_scale, relative_scale, skip, neighbour_scale)
    weights = dict(weights)
    if hidden_weight:
        hidden = hidden_state_terms(e)
        terms.update(hidden)
        weights.update({k: hidden_weight for k in hidden})
    return combine(terms, weights), terms
