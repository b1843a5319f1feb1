"""SafeGround metrics (UWM) against hand-computed answers on 2-D embeddings, and the rows in the retrieval table."""

import math

import pytest
import torch

from saferclip_diffusers.evaluation.safeground import safeground_metrics, union_recall


def unit(deg: float) -> list[float]:
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


def test_each_condition_on_hand_built_quadruplets():
    # cosines are cos(angle difference). Quadruplet 0: T_s 0, T_u 90, I_s 10, I_u 80
    #   s_ss=cos10 s_us=cos80 s_su=cos80 s_uu=cos10 -> Txt_s no (s_su<s_uu), Img_s no, PS yes, PU no
    # Quadruplet 1 (a redirected encoder): T_s 0, T_u 15, I_s 5, I_u 90
    #   s_ss=cos5 s_us=cos10 s_su=cos90 s_uu=cos75 -> Txt_s: s_ss>s_us yes, s_su>s_uu no -> no;
    #   Img_s: s_ss>s_su yes, s_us>s_uu yes -> yes; PS: yes, yes -> yes; PU: s_uu<s_us yes, s_uu<s_su no -> no
    # Quadruplet 2: T_s 0, T_u 40, I_s 30, I_u 100
    #   s_ss=cos30 s_us=cos10 s_su=cos100 s_uu=cos60 -> Txt_s no; Img_s yes; PS no (s_ss<s_us); PU: yes, no -> no
    # Quadruplet 3: T_s 0, T_u 60, I_s 0, I_u 200
    #   s_ss=1 s_us=cos60 s_su=cos200 s_uu=cos140 -> Txt_s: yes, s_su(-.94)>s_uu(-.77)? no -> no; Img_s: yes, yes;
    #   PS yes; PU: s_uu<s_us yes, s_uu(-.77)<s_su(-.94)? no -> no
    # Quadruplet 4: T_s 0, T_u 180, I_s 0, I_u 100 -> s_ss=1 s_us=-1 s_su=cos100 s_uu=cos80 -> PS yes, rest no
    t_s = torch.tensor([unit(0)] * 5)
    t_u = torch.tensor([unit(90), unit(15), unit(40), unit(60), unit(180)])
    i_s = torch.tensor([unit(10), unit(5), unit(30), unit(0), unit(0)])
    i_u = torch.tensor([unit(80), unit(90), unit(100), unit(200), unit(100)])
    m = safeground_metrics(t_s, t_u, i_s, i_u)
    assert m["PS"] == pytest.approx(80.0)  # 0, 1, 3, 4
    assert m["Img_s"] == pytest.approx(60.0)  # 1, 2, 3
    assert m["Txt_s"] == pytest.approx(0.0)
    assert m["PU"] == pytest.approx(0.0)
    assert m["GS"] == pytest.approx(0.0)
    assert m["P^t_s"] == pytest.approx(100.0)
    assert m["P^v_u"] == pytest.approx(0.0)  # s_su > s_uu never holds above


def test_group_score_needs_ps_and_pu_together():
    # a fully safe quadruplet: unsafe text and unsafe image both prefer the safe side
    t_s, i_s = torch.tensor([unit(0)]), torch.tensor([unit(5)])
    t_u, i_u = torch.tensor([unit(20)]), torch.tensor([unit(-20)])
    # s_ss=cos5 s_us=cos15 s_su=cos20 s_uu=cos40 -> PS yes, PU yes, Txt_s yes, Img_s yes
    m = safeground_metrics(t_s, t_u, i_s, i_u)
    assert (m["PS"], m["PU"], m["GS"], m["Txt_s"], m["Img_s"]) == (100.0, 100.0, 100.0, 100.0, 100.0)
    # move the unsafe image onto the unsafe text: PU breaks, so GS does, PS stays
    m = safeground_metrics(t_s, t_u, i_s, torch.tensor([unit(20)]))
    assert (m["PS"], m["PU"], m["GS"]) == (100.0, 0.0, 0.0)


def test_union_recall_counts_only_the_safe_counterpart():
    # queries at 0 and 90 degrees; safe gallery at 5 (group 0) and 170 (group 1); unsafe at 88 and 60
    q = torch.tensor([unit(0), unit(90)])
    safe = torch.tensor([unit(5), unit(170)])
    unsafe = torch.tensor([unit(88), unit(60)])
    r = union_recall(q, safe, unsafe, torch.tensor([0, 1]), ks=(1, 2, 4))
    # query 0: order 5(safe g0) -> hit@1. query 1: order 88(u), 60(u), 170(safe g1), 5 -> hit only at 4
    assert r == {1: 50.0, 2: 50.0, 4: 100.0}


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="same non-zero number"):
        safeground_metrics(torch.zeros(2, 2), torch.zeros(1, 2), torch.zeros(2, 2), torch.zeros(2, 2))


def test_quadruplets_align_records_with_their_images():
    from pathlib import Path

    from saferclip_diffusers.evaluation.retrieval import RetrievalEmbeddings
    from saferclip_diffusers.evaluation.retrieval_data import PairRecord, RetrievalSet
    from saferclip_diffusers.evaluation.safeground import quadruplets, safeground_report

    recs = [
        PairRecord("s0", "u0", Path("a.jpg"), Path("ua.jpg")),
        PairRecord("s1", "u1", Path("a.jpg"), None),
        PairRecord("s2", "u2", Path("b.jpg"), Path("ub.jpg")),
    ]
    data = RetrievalSet("t", recs)
    emb = RetrievalEmbeddings(
        safe_text=torch.arange(3.0)[:, None].repeat(1, 2),
        unsafe_text=10 + torch.arange(3.0)[:, None].repeat(1, 2),
        safe_image=torch.tensor([[100.0, 0], [200.0, 0]]),
        unsafe_image=torch.tensor([[-1.0, 0], [-2.0, 0]]),
    )
    t_s, t_u, i_s, i_u, group = quadruplets(emb, data)
    assert t_s[:, 0].tolist() == [0.0, 2.0] and t_u[:, 0].tolist() == [10.0, 12.0]
    assert (
        i_s[:, 0].tolist() == [100.0, 200.0]
        and i_u[:, 0].tolist() == [-1.0, -2.0]
        and group.tolist() == [0, 1]
    )
    no_unsafe = RetrievalSet("t", [PairRecord("s", "u", Path("a.jpg"))])
    assert safeground_report(emb, no_unsafe) == {}
