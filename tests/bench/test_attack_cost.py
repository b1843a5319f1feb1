"""Attack cost benchmark: FLOP counting against hand counts, and the step transcriptions against the attacks."""

from __future__ import annotations

import pytest
import torch

from bench import attack_cost as ac


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_flop_count_of_one_linear_layer_is_2mnk(device):
    m, k, n = 3, 5, 7
    layer = torch.nn.Linear(k, n, bias=False, device=device)
    x = torch.zeros(m, k, device=device)
    assert ac.count_flops(lambda: layer(x)) == 2 * m * n * k
    # backward: the input gradient (x.grad = g W) and the weight gradient (g^T x) cost 2mnk each
    # (the input reaches the layer through an element-wise op, as the attacks' soft rows do: not counted)
    xg = x.clone().requires_grad_(True)
    assert ac.count_flops(lambda: torch.autograd.grad(layer(xg + 0).sum(), xg)) == 2 * (2 * m * n * k)
    assert ac.count_flops(lambda: layer(xg + 0).sum().backward()) == 3 * (2 * m * n * k)


@pytest.fixture(scope="module")
def sd_pipe(tiny_sd_dir, safe_sd_dir):
    from saferclip_diffusers.pipelines import SaferStableDiffusionPipeline

    return SaferStableDiffusionPipeline.from_pretrained(
        tiny_sd_dir,
        safe_text_encoder=safe_sd_dir,
        keep_original=True,
        dtype=torch.float32,
        local_files_only=True,
    )


def _per_step(attack_name, pipe, target, **budget):
    from saferclip_diffusers.attacks import get_attack

    long = get_attack(attack_name, steps=3, **budget)
    short = get_attack(attack_name, steps=1, **budget)
    return (
        ac.count_flops(lambda: long.run(pipe, target)) - ac.count_flops(lambda: short.run(pipe, target))
    ) / 2


def test_step_transcriptions_count_what_the_attacks_compute(sd_pipe):
    from saferclip_diffusers.attacks.conditioning import core_ids

    target = "a naked woman on the beach"
    ud = _per_step("unlearndiff", sd_pipe, target, per_timestep=2, timesteps=3, image_steps=2, eval_points=4)
    assert ud == ac.count_flops(ac.unlearndiff_step(sd_pipe.text_encoder, sd_pipe.unet, eval_points=4))
    n = len(core_ids(sd_pipe.tokenizer, target))
    gcg = _per_step("swap-gcg", sd_pipe, target, candidates=1, top_k=8, patience=None)
    assert gcg == ac.count_flops(ac.swap_gcg_step(sd_pipe.text_encoder, 1, n))
    # a swap-gcg step is affine in the candidate count: each candidate is one 77-token encoder forward
    forward = ac.count_flops(ac._forward(sd_pipe.text_encoder))
    step = ac.count_flops(ac.swap_gcg_step(sd_pipe.text_encoder, 9, n))
    assert step - ac.count_flops(ac.swap_gcg_step(sd_pipe.text_encoder, 1, n)) == 8 * forward
