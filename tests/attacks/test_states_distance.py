"""The adaptive (token-state) distance shared by swap-gcg and robust training, against a direct transcription."""

from __future__ import annotations

import math

import pytest
import torch

from saferclip_diffusers.attacks.conditioning import ConditioningObjective, states_distance


def transcribed(hidden, target_hidden, pooled, target_pooled, w_pool):
    """``mean_slots [ mean_{i=1..L-1} (1 - cos(h_i, h0_i)) ] + w_pool (1 - cos(p, p0))`` with plain loops."""

    def cos(a, b):
        return float(a @ b) / (math.sqrt(float(a @ a)) * math.sqrt(float(b @ b)))

    out = []
    for r in range(pooled.shape[0]):
        slots = []
        for h, h0 in zip(hidden, target_hidden, strict=True):
            goal = h0 if h0.dim() == 2 else h0[r]
            per = [1 - cos(h[r, i], goal[i]) for i in range(1, h.shape[1])]
            slots.append(sum(per) / len(per))
        p0 = target_pooled if target_pooled.dim() == 1 else target_pooled[r]
        out.append(sum(slots) / len(slots) + w_pool * (1 - cos(pooled[r], p0)))
    return torch.tensor(out)


@pytest.mark.parametrize("per_row", [False, True])
def test_states_distance_equals_a_direct_transcription(per_row):
    g = torch.Generator().manual_seed(0)
    hidden = [torch.randn(3, 5, 4, generator=g), torch.randn(3, 5, 6, generator=g)]
    shape = (3,) if per_row else ()
    target = [torch.randn(*shape, 5, 4, generator=g), torch.randn(*shape, 5, 6, generator=g)]
    pooled, target_pooled = torch.randn(3, 7, generator=g), torch.randn(*shape, 7, generator=g)
    got = states_distance(hidden, target, pooled, target_pooled, 0.7)
    assert torch.allclose(got, transcribed(hidden, target, pooled, target_pooled, 0.7), atol=1e-5)
    # position 0 (BOS) never counts; every other position does
    moved = [h.clone() for h in hidden]
    moved[0][:, 0] = torch.randn(3, 4, generator=g)
    assert torch.allclose(states_distance(moved, target, pooled, target_pooled, 0.7), got)
    moved[0][:, 4] = torch.randn(3, 4, generator=g)
    assert not torch.allclose(states_distance(moved, target, pooled, target_pooled, 0.7), got)
    pooled_only = states_distance(hidden, target, pooled, target_pooled, 0.7, "pooled")
    goal = target_pooled.expand(3, -1)
    direct = torch.tensor(
        [1 - float(p @ q) / float(p.norm() * q.norm()) for p, q in zip(pooled, goal, strict=True)]
    )
    assert torch.allclose(pooled_only, direct, atol=1e-6)


def test_conditioning_objective_is_the_shared_distance():
    g = torch.Generator().manual_seed(1)
    target, target_pooled = [torch.randn(5, 4, generator=g)], torch.randn(7, generator=g)
    hidden, pooled = [torch.randn(2, 5, 4, generator=g)], torch.randn(2, 7, generator=g)
    objective = ConditioningObjective(target, target_pooled, "states", 0.5)
    assert torch.allclose(
        objective.loss(hidden, pooled), transcribed(hidden, target, pooled, target_pooled, 0.5), atol=1e-5
    )
