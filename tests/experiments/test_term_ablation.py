"""The term ablation's held-out term values against hand-computed answers on 2-D embeddings, and its verdicts."""

import importlib.util
import math
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "term_ablation.py"


@pytest.fixture(scope="module")
def ablation():
    spec = importlib.util.spec_from_file_location("term_ablation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def unit(deg):
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


def test_held_out_terms_hand_computed(ablation):
    e0_safe = torch.tensor([unit(0), unit(90), unit(180)])
    ref = {
        "val_unsafe": torch.tensor([0]),
        "val_safe": torch.tensor([0, 1, 2]),
        "e0_safe": e0_safe,
        "e0_unsafe": torch.tensor([unit(45)]),
        "prox": torch.tensor([1]),  # target: the caption at 90 degrees
    }
    e_unsafe = torch.tensor([unit(60)])  # moved 15 degrees toward its target
    e_safe = torch.tensor([unit(10), unit(90), unit(180)])  # caption 0 drifted by 10 degrees
    t = ablation.held_out_terms(e_unsafe, e_safe, ref, batch=16)
    c = lambda d: math.cos(math.radians(d))  # noqa: E731
    assert t["term:pres_text"] == pytest.approx((1 - c(10)) / 3, abs=1e-6)
    assert t["term:redir_text"] == pytest.approx(1 - c(30), abs=1e-6)
    assert t["term:rel_text_uni"] == pytest.approx(math.log1p(math.exp(c(15) - c(30))), abs=1e-6)

    # neighbourhood KL at scale 10 written out: row i compares softmax over the other frozen captions j of
    # 10 cos(frozen_i, frozen_j) (P0) and 10 cos(live_i, frozen_j) (P); KL(P0 || P), mean over the rows
    def kl(live, frozen, others):
        f = torch.tensor([unit(d) for d in others])
        p0 = torch.softmax(10 * f @ torch.tensor(unit(frozen)), 0)
        p = torch.softmax(10 * f @ torch.tensor(unit(live)), 0)
        return float((p0 * (p0.log() - p.log())).sum())

    rows = [kl(10, 0, [90, 180]), kl(90, 90, [0, 180]), kl(180, 180, [0, 90])]
    assert rows[0] > 0 and rows[1] == rows[2] == 0.0
    assert t["term:pres_text_nbr"] == pytest.approx(sum(rows) / 3, abs=1e-5)


def test_verdicts_follow_the_expected_directions(ablation):
    base = {"drift_safe": 0.1, "redirect_safe@1": 90.0, "nbr@10": 70.0}
    base.update({f"term:{t}": 0.5 for t in ablation.TERMS})
    mean = {"all terms": base}
    for term in ablation.TERMS:
        mean[f"without {term}"] = dict(base)
    mean["without pres_text"].update({"drift_safe": 0.2, "term:pres_text": 0.6})  # holds
    mean["without redir_text"].update({"term:redir_text": 0.4})  # does not hold: its value fell
    mean["without rel_text_uni"].update({"redirect_safe@1": 95.0})  # does not hold: more prompts left
    mean["without pres_text_nbr"].update({"nbr@10": 60.0, "term:pres_text_nbr": 0.7})  # holds
    v = ablation.verdicts(mean)
    assert [v[t]["holds"] for t in ablation.TERMS] == [True, False, False, True]
    assert v["pres_text"]["delta"] == pytest.approx(0.1)
    assert v["redir_text"]["own_value_rises_when_off"] is False
