"""The paper check's held-out metrics against hand-computed answers on 2-D embeddings."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "paper_check.py"


@pytest.fixture(scope="module")
def check():
    spec = importlib.util.spec_from_file_location("paper_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def unit(deg):
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


def test_metrics_hand_computed(check):
    e0_safe = torch.tensor([unit(a) for a in range(0, 360, 30)])  # 12 captions, index i at 30*i degrees
    e0_unsafe = torch.tensor([unit(95), unit(200)])
    ref = {
        "val_unsafe": torch.tensor([0, 1]),
        "val_safe": torch.tensor([0]),
        "e0_safe": e0_safe,
        "e0_unsafe": e0_unsafe,
        "prox": torch.tensor([3, 7]),
    }  # nearest captions: 90 and 210 degrees
    sims = e0_safe[[0]] @ e0_safe.T
    sims[0, 0] = -2
    ref["nbr0"] = sims.topk(10, dim=1).indices  # all but itself and 180 degrees (index 6)
    # edited encoder: unsafe 0 moves onto 88 degrees (nearest: caption 3 = its target), unsafe 1 stays put
    # (nearest: its own frozen embedding, an unsafe row); caption 0 moves to 170 degrees
    e_unsafe = torch.tensor([unit(88), unit(200)])
    e_safe = e0_safe.clone()
    e_safe[0] = torch.tensor(unit(170))
    m = check.metrics(e_unsafe, e_safe, ref)
    assert m["redirect@1"] == pytest.approx(50.0)
    assert m["redirect_safe@1"] == pytest.approx(50.0)
    assert m["drift_safe"] == pytest.approx(1 - math.cos(math.radians(170)), abs=1e-6)
    # new top-10 of caption 0 (at 170): all but itself and 330 degrees (index 11): 9 of the original 10 kept
    assert m["nbr@10"] == pytest.approx(90.0)
    unchanged = check.metrics(e0_unsafe, e0_safe, ref)
    assert (unchanged["redirect_safe@1"], unchanged["drift_safe"], unchanged["nbr@10"]) == (0.0, 0.0, 100.0)


def test_budget_overrides_give_every_method_the_same_data_and_batches(check):
    from saferclip_diffusers.training.config import load_config

    cfgs = {m: load_config("tiny", check.overrides(m, 3, "quick")) for m in check.METHODS}
    assert {c.method for c in cfgs.values()} == {"saferclip", "safeclip", "uwm", "des"}
    for c in cfgs.values():
        assert (c.data.max_unsafe, c.data.max_safe, c.data.val_size, c.seed) == (240, 800, 60, 3)
        assert (c.optim.batch_size, c.optim.epochs) == (16, 2)
        assert c.encoders[0].backbone == "transformers-mean"
    assert cfgs["des"].finetune == "full" and cfgs["saferclip"].finetune == "lora"


def _row(seed, redirect):
    return {"seed": seed, "redirect@1": redirect, "redirect_safe@1": 50.0, "drift_safe": 0.1, "nbr@10": 80.0}


def test_finished_runs_are_kept_and_combined(check, tmp_path):
    folder = check.runs_dir(tmp_path, "quick")
    folder.mkdir(parents=True)
    for seed, value in ((0, 10.0), (1, 30.0)):
        (folder / f"run-uwm-seed{seed}.json").write_text(
            json.dumps({"method": "uwm", "result": {**_row(seed, value), "steps": 0}})
        )
    # every requested (method, seed) is finished: nothing is loaded or trained, the summary covers both seeds
    result = check.run([0, 1], "quick", tmp_path, methods=("uwm",))
    assert result["seeds"] == [0, 1] and list(result["runs"]) == ["uwm"]
    assert result["summary"]["uwm"]["redirect@1"] == pytest.approx([20.0, 10.0])
    # a merged file adds new runs but never replaces a finished one
    part = tmp_path / "part.json"
    rows = [{**_row(1, 99.0), "steps": 0}, {**_row(2, 50.0), "steps": 0}]
    part.write_text(json.dumps({"budget": "quick", "seeds": [1, 2], "runs": {"uwm": rows}, "examples": []}))
    merged = check.merge([part], tmp_path)
    assert [r["redirect@1"] for r in merged["runs"]["uwm"]] == [10.0, 30.0, 50.0]
    assert json.loads((tmp_path / "paper_check-quick.json").read_text())["seeds"] == [0, 1, 2]
