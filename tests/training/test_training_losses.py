"""Each loss term against values computed by hand on small tensors."""

import math

import numpy as np
import pytest
import torch

from saferclip_diffusers.training.losses import (
    SAFECLIP_WEIGHTS,
    SAFERCLIP_WEIGHTS,
    TEXT_ONLY_REPLACEMENTS,
    BatchEmbeddings,
    combine,
    cosine_distance,
    hidden_state_terms,
    info_nce,
    method_loss,
    neighbourhood_kl,
    relative_redirection,
    safeclip_terms,
    saferclip_terms,
)

T = torch.tensor


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# Independent transcriptions of the papers' equations in numpy (not the library's torch helpers), for the
# composite terms: d = mean(1 - cos); InfoNCE = mean of the two cross-entropies of s * cos; relative =
# mean softplus(s * (cos(q, n) - cos(q, p))).
def _unit(x: torch.Tensor) -> np.ndarray:
    x = x.detach().double().numpy()
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def ref_cos_dist(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.mean(1 - (_unit(a) * _unit(b)).sum(-1)))


def ref_info_nce(a: torch.Tensor, b: torch.Tensor, s: float) -> float:
    logits = s * _unit(a) @ _unit(b).T

    def ce(z: np.ndarray) -> float:  # -log softmax of the diagonal, row-wise, stabilised
        top = z.max(axis=1, keepdims=True)
        return float(np.mean(top[:, 0] + np.log(np.exp(z - top).sum(1)) - np.diag(z)))

    return 0.5 * (ce(logits) + ce(logits.T))


def ref_relative(q: torch.Tensor, n: torch.Tensor, p: torch.Tensor, s: float = 1.0) -> float:
    q_ = _unit(q)
    return float(np.mean(np.log1p(np.exp(s * ((q_ * _unit(n)).sum(-1) - (q_ * _unit(p)).sum(-1))))))


def test_cosine_distance_by_hand():
    a = T([[1.0, 0.0], [1.0, 1.0]])
    b = T([[2.0, 0.0], [1.0, 0.0]])  # scale must not matter; second pair is 45 degrees apart
    assert cosine_distance(a, b).item() == pytest.approx((0.0 + (1 - 1 / math.sqrt(2))) / 2, abs=1e-6)
    assert cosine_distance(T([[1.0, 0.0]]), T([[-3.0, 0.0]])).item() == pytest.approx(2.0)


def test_info_nce_by_hand():
    a = T([[1.0, 0.0], [0.0, 1.0]])
    b = T([[1.0, 0.0], [0.6, 0.8]])
    s = 2.0
    # cosines a.b^T = [[1, 0.6], [0, 0.8]]; logits = s * cosines; labels on the diagonal
    e = math.exp
    rows = -math.log(e(s) / (e(s) + e(0.6 * s))) - math.log(e(0.8 * s) / (1 + e(0.8 * s)))
    cols = -math.log(e(s) / (e(s) + 1)) - math.log(e(0.8 * s) / (e(0.6 * s) + e(0.8 * s)))
    assert info_nce(a, b, logit_scale=s).item() == pytest.approx(0.5 * (rows / 2 + cols / 2), abs=1e-6)
    # Safe-CLIP's scale exp(4.6052) is the default
    logits = 100.00298144563507 * torch.eye(2)
    expected = torch.nn.functional.cross_entropy(logits, torch.arange(2)).item()
    assert info_nce(torch.eye(2), torch.eye(2)).item() == pytest.approx(expected, rel=1e-6)


def test_info_nce_is_not_symmetric_in_batch_order():
    a = T([[1.0, 0.0], [0.0, 1.0]])
    assert info_nce(a, a.flip(0), 1.0).item() > info_nce(a, a, 1.0).item()


def test_relative_redirection_by_hand():
    q = T([[1.0, 0.0], [0.0, 1.0]])
    neg = T([[0.0, 1.0], [0.0, 1.0]])  # sample 0 already away from its unsafe counterpart, sample 1 on it
    pos = T([[1.0, 0.0], [1.0, 0.0]])
    expected = (softplus(0 - 1) + softplus(1 - 0)) / 2
    assert relative_redirection(q, neg, pos).item() == pytest.approx(expected, abs=1e-6)
    assert relative_redirection(q, neg, pos, scale=3.0).item() == pytest.approx(
        (softplus(-3) + softplus(3)) / 2, abs=1e-6
    )


def test_relative_redirection_has_no_in_batch_negatives():
    q, neg, pos = torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 8)
    full = relative_redirection(q, neg, pos)
    per_sample = torch.stack(
        [relative_redirection(q[i : i + 1], neg[i : i + 1], pos[i : i + 1]) for i in range(4)]
    )
    assert full.item() == pytest.approx(per_sample.mean().item(), abs=1e-6)


def _emb(images: bool, seed: int = 0) -> BatchEmbeddings:
    g = torch.Generator().manual_seed(seed)
    r = lambda: torch.randn(3, 4, generator=g)  # noqa: E731
    kw = dict(T_t=r(), T_ts=r(), T0_t=r(), T0_ts=r(), T0_hat=r())
    if images:
        kw.update(V_v=r(), V_vs=r(), V0_v=r(), V0_vs=r(), V0_hat=r())
    return BatchEmbeddings(**kw)


def test_safeclip_eight_terms_and_normalisation():
    e = _emb(images=True)
    terms = safeclip_terms(e, logit_scale=100.0)
    eight = {k: w for k, w in SAFECLIP_WEIGHTS.items() if k not in TEXT_ONLY_REPLACEMENTS.values()}
    assert list(eight.values()) == [0.1, 0.1, 0.1, 0.2, 0.25, 0.25, 0.25, 0.5]
    assert set(terms) == set(eight)
    by_hand = {
        "text_safe": ref_cos_dist(e.T_t, e.T0_t),
        "text_nsfw": ref_cos_dist(e.T_ts, e.T0_hat),
        "vision_safe": ref_cos_dist(e.V_v, e.V0_v),
        "vision_nsfw": ref_cos_dist(e.V_vs, e.V0_hat),
        "S_Vref": ref_info_nce(e.T_t, e.V0_v, 100.0),
        "U_Vref": ref_info_nce(e.T_ts, e.V0_hat, 100.0),
        "V_Sref": ref_info_nce(e.T0_t, e.V_v, 100.0),
        "G_Sref": ref_info_nce(e.T0_hat, e.V_vs, 100.0),
    }
    for name, value in by_hand.items():
        assert terms[name].item() == pytest.approx(value, abs=1e-5), name
    total, _ = method_loss("safeclip", e, SAFECLIP_WEIGHTS, logit_scale=100.0)
    lam = eight
    expected = sum(lam[k] / 1.75 * by_hand[k] for k in lam) / 8  # Safe-CLIP: (lambda/sum) . l / 8
    assert total.item() == pytest.approx(expected, rel=1e-6)


def test_saferclip_terms_with_images_by_hand():
    e = _emb(images=True, seed=1)
    terms = saferclip_terms(e, logit_scale=10.0)
    assert set(terms) == set(SAFERCLIP_WEIGHTS) - set(TEXT_ONLY_REPLACEMENTS.values())
    assert terms["rel_text"].item() == pytest.approx(ref_relative(e.T_ts, e.V0_vs, e.V0_hat), abs=1e-5)
    assert terms["rel_image"].item() == pytest.approx(ref_relative(e.V_vs, e.T0_ts, e.T0_hat), abs=1e-5)
    assert terms["redir_text"].item() == pytest.approx(ref_cos_dist(e.T_ts, e.T0_hat), abs=1e-5)
    assert terms["redir_image"].item() == pytest.approx(ref_cos_dist(e.V_vs, e.V0_hat), abs=1e-5)
    assert terms["pres_text_cross"].item() == pytest.approx(ref_info_nce(e.T_t, e.V0_v, 10.0), abs=1e-5)
    assert terms["pres_image_cross"].item() == pytest.approx(ref_info_nce(e.T0_t, e.V_v, 10.0), abs=1e-5)
    # a single row, by hand: cos(V(v*), T0(t*)) = 0, cos(V(v*), T0(t^)) = 1
    one = BatchEmbeddings(
        T_t=T([[1.0, 0]]),
        T_ts=T([[1.0, 0]]),
        T0_t=T([[1.0, 0]]),
        T0_ts=T([[0.0, 1]]),
        T0_hat=T([[1.0, 0]]),
        V_vs=T([[1.0, 0]]),
    )
    assert saferclip_terms(one)["rel_image"].item() == pytest.approx(softplus(-1.0), abs=1e-6)


def test_text_only_replacements():
    """Without images each cross-modal term is replaced by its text-only counterpart (TEXT_ONLY_REPLACEMENTS)."""
    e = _emb(images=False, seed=2)
    terms = saferclip_terms(e, logit_scale=10.0, neighbour_scale=3.0)
    assert set(terms) == {"pres_text", "redir_text", "pres_text_nbr", "rel_text_uni"}
    assert terms["rel_text_uni"].item() == pytest.approx(ref_relative(e.T_ts, e.T0_ts, e.T0_hat), abs=1e-5)
    assert terms["pres_text_nbr"].item() == pytest.approx(
        neighbourhood_kl(e.T_t, e.T0_t, 3.0).item(), abs=1e-6
    )
    sc = safeclip_terms(e, logit_scale=10.0)
    assert set(sc) == {"text_safe", "text_nsfw", "S_nbr", "U_Tref"}
    assert sc["U_Tref"].item() == pytest.approx(ref_info_nce(e.T_ts, e.T0_hat, 10.0), abs=1e-5)
    # safe images but no unsafe images: the relative term needs both, so it stays text-only
    e.V0_v, e.V0_hat = torch.randn(3, 4), torch.randn(3, 4)
    terms = saferclip_terms(e, logit_scale=10.0)
    assert "rel_text_uni" in terms and "rel_text" not in terms and "pres_text_nbr" not in terms
    assert terms["pres_text_cross"].item() == pytest.approx(ref_info_nce(e.T_t, e.V0_v, 10.0), abs=1e-5)
    assert set(TEXT_ONLY_REPLACEMENTS.values()) <= set(SAFERCLIP_WEIGHTS) | set(SAFECLIP_WEIGHTS)


def test_neighbourhood_kl_by_hand():
    """KL over the *other* rows, from softmax of scaled cosines; the row's own frozen embedding is left out."""
    frozen = T([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    live = T([[0.8, 0.6], [0.0, 1.0], [0.6, 0.8]])
    s = 2.0

    def softmax(xs):
        z = sum(math.exp(x) for x in xs)
        return [math.exp(x) / z for x in xs]

    cos = lambda a, b: sum(x * y for x, y in zip(a, b, strict=True))  # unit vectors  # noqa: E731
    f, lv = frozen.tolist(), live.tolist()
    kl = 0.0
    for i in range(3):
        others = [j for j in range(3) if j != i]
        p = softmax([s * cos(f[i], f[j]) for j in others])
        q = softmax([s * cos(lv[i], f[j]) for j in others])
        kl += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    assert neighbourhood_kl(live, frozen, s).item() == pytest.approx(kl / 3, abs=1e-6)
    assert neighbourhood_kl(frozen, frozen, s).item() == pytest.approx(0.0, abs=1e-7)


def test_neighbourhood_kl_is_not_saturated_where_self_infonce_is():
    """The old text-only stand-in InfoNCE(T(t), T0(t)) at scale 100 is ~0 after caption 0 drifts toward
    caption 1; the neighbourhood term at its scale 10 is not (at 100 it would be one-hot, saturated too)."""
    g = torch.Generator().manual_seed(0)
    frozen = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=-1)
    moved = frozen.clone()
    moved[0] = torch.nn.functional.normalize(
        frozen[0] + 0.2 * frozen[1], dim=-1
    )  # caption 0 drifts toward caption 1
    assert info_nce(moved, frozen, 100.0).item() < 1e-6
    assert neighbourhood_kl(moved, frozen).item() > 1e-3


def test_combine_and_zero_weights():
    terms = {"a": T(1.0), "b": T(3.0), "c": T(100.0)}
    assert combine(terms, {"a": 1.0, "b": 3.0, "c": 0.0}).item() == pytest.approx((0.25 * 1 + 0.75 * 3) / 2)
    with pytest.raises(ValueError, match="no active loss term"):
        combine(terms, {"a": 0.0})
    e = _emb(images=False)
    _, terms = method_loss("saferclip", e, {**SAFERCLIP_WEIGHTS, "pres_text_nbr": 0.0})
    assert "pres_text_nbr" not in terms and "rel_text_uni" in terms


def test_hidden_state_terms_and_weight():
    e = _emb(images=False)
    e.H_t, e.H_ts, e.H0_t, e.H0_hat = (
        torch.randn(3, 5),
        torch.randn(3, 5),
        torch.randn(3, 5),
        torch.randn(3, 5),
    )
    h = hidden_state_terms(e)
    assert h["hidden_redir"].item() == pytest.approx(ref_cos_dist(e.H_ts, e.H0_hat), abs=1e-5)
    assert h["hidden_pres"].item() == pytest.approx(ref_cos_dist(e.H_t, e.H0_t), abs=1e-5)
    without, _ = method_loss("saferclip", e, SAFERCLIP_WEIGHTS)
    with_h, terms = method_loss("saferclip", e, SAFERCLIP_WEIGHTS, hidden_weight=0.5)
    # the two hidden terms join the four text-only terms at weight 0.5 each: sum_k (w_k / sum w) * l_k / 6
    w = {k: SAFERCLIP_WEIGHTS[k] for k in ("pres_text", "redir_text", "pres_text_nbr", "rel_text_uni")}
    w.update(hidden_redir=0.5, hidden_pres=0.5)
    assert set(terms) == set(w)
    expected = sum(w[k] / sum(w.values()) * terms[k].item() for k in w) / 6
    assert with_h.item() == pytest.approx(expected, rel=1e-6) and with_h.item() != pytest.approx(
        without.item()
    )


def test_gradients_reach_every_live_embedding():
    e = _emb(images=True)
    live = [e.T_t, e.T_ts, e.V_v, e.V_vs]
    for x in live:
        x.requires_grad_(True)
    for method, w in (("saferclip", SAFERCLIP_WEIGHTS), ("safeclip", SAFECLIP_WEIGHTS)):
        for x in live:
            x.grad = None
        loss, _ = method_loss(method, e, w)
        loss.backward()
        assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in live), method
