"""Each loss term against values computed by hand on small tensors."""

import math

import pytest
import torch

from saferclip_diffusers.training.losses import (
    SAFECLIP_WEIGHTS,
    SAFERCLIP_WEIGHTS,
    BatchEmbeddings,
    combine,
    cosine_distance,
    hidden_state_terms,
    info_nce,
    method_loss,
    relative_redirection,
    safeclip_terms,
    saferclip_terms,
)

T = torch.tensor


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


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
    assert relative_redirection(q, neg, pos, scale=3.0).item() == pytest.approx((softplus(-3) + softplus(3)) / 2, abs=1e-6)


def test_relative_redirection_has_no_in_batch_negatives():
    q, neg, pos = torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 8)
    full = relative_redirection(q, neg, pos)
    per_sample = torch.stack([relative_redirection(q[i : i + 1], neg[i : i + 1], pos[i : i + 1]) for i in range(4)])
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
    assert list(SAFECLIP_WEIGHTS.values()) == [0.1, 0.1, 0.1, 0.2, 0.25, 0.25, 0.25, 0.5]
    assert set(terms) == set(SAFECLIP_WEIGHTS)
    by_hand = {
        "text_safe": cosine_distance(e.T_t, e.T0_t),
        "text_nsfw": cosine_distance(e.T_ts, e.T0_hat),
        "vision_safe": cosine_distance(e.V_v, e.V0_v),
        "vision_nsfw": cosine_distance(e.V_vs, e.V0_hat),
        "S_Vref": info_nce(e.T_t, e.V0_v, 100.0),
        "U_Vref": info_nce(e.T_ts, e.V0_hat, 100.0),
        "V_Sref": info_nce(e.T0_t, e.V_v, 100.0),
        "G_Sref": info_nce(e.T0_hat, e.V_vs, 100.0),
    }
    for name, value in by_hand.items():
        assert terms[name].item() == pytest.approx(value.item(), abs=1e-6), name
    total, _ = method_loss("safeclip", e, SAFECLIP_WEIGHTS, logit_scale=100.0)
    lam = SAFECLIP_WEIGHTS
    expected = sum(lam[k] / 1.75 * by_hand[k].item() for k in lam) / 8  # Safe-CLIP: (lambda/sum) . l / 8
    assert total.item() == pytest.approx(expected, rel=1e-6)


def test_saferclip_terms_with_images_by_hand():
    e = _emb(images=True, seed=1)
    terms = saferclip_terms(e, logit_scale=10.0)
    assert set(terms) == set(SAFERCLIP_WEIGHTS)
    assert terms["rel_text"].item() == pytest.approx(relative_redirection(e.T_ts, e.V0_vs, e.V0_hat).item(), abs=1e-6)
    assert terms["rel_image"].item() == pytest.approx(relative_redirection(e.V_vs, e.T0_ts, e.T0_hat).item(), abs=1e-6)
    assert terms["redir_text"].item() == pytest.approx(cosine_distance(e.T_ts, e.T0_hat).item(), abs=1e-6)
    assert terms["redir_image"].item() == pytest.approx(cosine_distance(e.V_vs, e.V0_hat).item(), abs=1e-6)
    assert terms["pres_text_cross"].item() == pytest.approx(info_nce(e.T_t, e.V0_v, 10.0).item(), abs=1e-6)
    assert terms["pres_image_cross"].item() == pytest.approx(info_nce(e.T0_t, e.V_v, 10.0).item(), abs=1e-6)
    # a single row, by hand: cos(V(v*), T0(t*)) = 0, cos(V(v*), T0(t^)) = 1
    one = BatchEmbeddings(T_t=T([[1.0, 0]]), T_ts=T([[1.0, 0]]), T0_t=T([[1.0, 0]]), T0_ts=T([[0.0, 1]]),
                          T0_hat=T([[1.0, 0]]), V_vs=T([[1.0, 0]]))
    assert saferclip_terms(one)["rel_image"].item() == pytest.approx(softplus(-1.0), abs=1e-6)


def test_text_only_stand_ins():
    """Without images the cross-modal terms use the frozen text embedding of the same caption."""
    e = _emb(images=False, seed=2)
    terms = saferclip_terms(e, logit_scale=10.0)
    assert set(terms) == {"pres_text", "redir_text", "pres_text_cross", "rel_text"}
    assert terms["rel_text"].item() == pytest.approx(relative_redirection(e.T_ts, e.T0_ts, e.T0_hat).item(), abs=1e-6)
    assert terms["pres_text_cross"].item() == pytest.approx(info_nce(e.T_t, e.T0_t, 10.0).item(), abs=1e-6)
    sc = safeclip_terms(e, logit_scale=10.0)
    assert set(sc) == {"text_safe", "text_nsfw", "S_Vref", "U_Vref"}
    assert sc["U_Vref"].item() == pytest.approx(info_nce(e.T_ts, e.T0_hat, 10.0).item(), abs=1e-6)
    # safe images but no unsafe images: rel_text still needs both, so it stays on text
    e.V0_v, e.V0_hat = torch.randn(3, 4), torch.randn(3, 4)
    terms = saferclip_terms(e, logit_scale=10.0)
    assert terms["rel_text"].item() == pytest.approx(relative_redirection(e.T_ts, e.T0_ts, e.T0_hat).item(), abs=1e-6)
    assert terms["pres_text_cross"].item() == pytest.approx(info_nce(e.T_t, e.V0_v, 10.0).item(), abs=1e-6)


def test_combine_and_zero_weights():
    terms = {"a": T(1.0), "b": T(3.0), "c": T(100.0)}
    assert combine(terms, {"a": 1.0, "b": 3.0, "c": 0.0}).item() == pytest.approx((0.25 * 1 + 0.75 * 3) / 2)
    with pytest.raises(ValueError, match="no active loss term"):
        combine(terms, {"a": 0.0})
    e = _emb(images=False)
    _, terms = method_loss("saferclip", e, {**SAFERCLIP_WEIGHTS, "pres_text_cross": 0.0})
    assert "pres_text_cross" not in terms


def test_hidden_state_terms_and_weight():
    e = _emb(images=False)
    e.H_t, e.H_ts, e.H0_t, e.H0_hat = torch.randn(3, 5), torch.randn(3, 5), torch.randn(3, 5), torch.randn(3, 5)
    h = hidden_state_terms(e)
    assert h["hidden_redir"].item() == pytest.approx(cosine_distance(e.H_ts, e.H0_hat).item())
    assert h["hidden_pres"].item() == pytest.approx(cosine_distance(e.H_t, e.H0_t).item())
    without, _ = method_loss("saferclip", e, SAFERCLIP_WEIGHTS)
    with_h, terms = method_loss("saferclip", e, SAFERCLIP_WEIGHTS, hidden_weight=0.5)
    assert "hidden_redir" in terms and with_h.item() != pytest.approx(without.item())


def test_gradients_reach_live_embeddings_only():
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
        assert e.T0_t.grad is None and e.V0_hat.grad is None
