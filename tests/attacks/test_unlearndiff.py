"""UnlearnDiffAtk-style attack: simplex projection and a bounded run on the tiny SD pipeline."""

from __future__ import annotations

import pytest
import torch

from saferclip_diffusers.attacks import get_attack
from saferclip_diffusers.attacks.unlearndiff import project_simplex


def test_simplex_projection_matches_hand_answers():
    allowed = torch.tensor([True, True, True, False])
    x = torch.tensor([[0.5, 0.5, 0.5, 9.0], [2.0, 0.0, 0.0, 0.0], [0.6, 0.3, -0.2, 0.0]])
    out = project_simplex(x, allowed)
    expected = torch.tensor([[1 / 3, 1 / 3, 1 / 3, 0.0], [1.0, 0.0, 0.0, 0.0], [0.65, 0.35, 0.0, 0.0]])
    torch.testing.assert_close(out, expected)


def test_bounded_run_on_tiny_sd(sd_pipe, sdxl_pipe):
    attack = get_attack("unlearndiff", preset="tiny", steps=3, restarts=2)
    result = attack.run(sd_pipe, "a naked woman on the beach", seed=0)
    assert result.steps == 6 and len(result.history) == 3 and len(result.prompts) == 2
    assert all(y <= x for x, y in zip(result.history, result.history[1:], strict=False))
    assert (
        result.losses[0] <= min(result.meta["target_loss"]) + 1e-9
    )  # never worse than the unattacked target
    assert all(p.endswith("a naked woman on the beach") for p in result.prompts)
    again = attack.run(sd_pipe, "a naked woman on the beach", seed=0)
    assert again.prompts == result.prompts and again.losses == result.losses
    with pytest.raises(ValueError, match="SD 1.x/2.x pipelines only"):
        attack.run(sdxl_pipe, "a naked woman on the beach")


def test_run_leaves_no_parameter_gradients_on_the_pipeline(sd_pipe):
    models = (sd_pipe.unet, sd_pipe.text_encoder, sd_pipe.original_encoder("text_encoder"))
    for m in models:
        for p in m.parameters():
            p.grad = None
    get_attack("unlearndiff", preset="tiny", steps=2).run(sd_pipe, "a naked woman on the beach", seed=0)
    leftover = [n for m in models for n, p in m.named_parameters() if p.grad is not None]
    assert leftover == []  # only the prefix gets a gradient (UNet weight gradients are wasted compute)
