"""Attack cost: FLOPs of ONE step of each attack at real size, and tiny-model timings side by side.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions and attention; the
element-wise rest is a rounding error) on meta tensors, so real-size architectures cost no memory or time: the
CLIP-L text tower (SD 1.5's) and the SD 1.5 UNet (859.5 M parameters) at 64x64 latents, both built from configs
with random weights (no hub). A step is transcribed from the attacks' own code with their own pieces
(``forward_slot``, ``with_soft_rows``, ``ConditioningObjective``):

* ``swap-gcg`` (also ``mma``): one-hot gradient through the encoder (forward + input-gradient backward) and
  ``candidates`` scoring forwards of 77 tokens;
* ``unlearndiff``: relaxed one-hot prefix through the encoder and the UNet (forward + input-gradient backward
  at batch 1), then the decoded prompt scored by one encoder forward and a UNet forward at ``eval_points``.

``text-only, unlearndiff's search`` is swap-gcg with one candidate: one gradient and one scored prompt per
step, as unlearndiff does. The tiny section runs the real attacks and also counts their FLOPs per step
(difference of two runs of different lengths, so set-up costs cancel) beside the transcription.
"""

from __future__ import annotations

from collections.abc import Callable

CANDIDATES = (1, 4, 8, 32, 256)
SEARCH = dict(top_k=64, patience=None, ban="mma-words", init="carrier")  # the robustness bench's setting


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of ``fn()`` as ``FlopCounterMode`` counts them (a multiply-add counts 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def real_size_models(device: str = "meta"):
    """CLIP-L text tower and SD 1.5 UNet, random weights, from configs (on ``meta``: shapes only)."""
    import saferclip_diffusers  # noqa: F401, I001  (its compatibility shims must precede diffusers' peft import)
    import torch
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device(device):
        clip = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=49408,
                hidden_size=768,
                intermediate_size=3072,
                num_hidden_layers=12,
                num_attention_heads=12,
                max_position_embeddings=77,
                eos_token_id=49407,
            )
        ).eval()
        unet = UNet2DConditionModel(cross_attention_dim=768, sample_size=64, attention_head_dim=8).eval()
    return clip, unet


def _slot(encoder):
    from saferclip_diffusers.attacks.conditioning import Slot

    return Slot("text_encoder", None, encoder, encoder, "final")


def swap_gcg_step(encoder, candidates: int, n_adv: int = 20) -> Callable[[], None]:
    """One swap-gcg step (see the module docstring) on ``encoder``'s device."""
    import torch

    from saferclip_diffusers.attacks.conditioning import ConditioningObjective, forward_slot
    from saferclip_diffusers.attacks.soft_tokens import embedding_matrix, with_soft_rows

    slot, weight = _slot(encoder), embedding_matrix(encoder)
    dev, (vocab, width) = weight.device, weight.shape
    ids = torch.zeros(1, 77, dtype=torch.long, device=dev)
    objective = ConditioningObjective([torch.zeros(77, width, device=dev)], torch.zeros(width, device=dev))
    positions = list(range(1, n_adv + 1))

    def step() -> None:
        one_hot = torch.zeros(n_adv, vocab, device=dev, requires_grad=True)
        h, p = forward_slot(
            slot, encoder, ids, with_soft_rows(encoder, ids, positions, (one_hot @ weight)[None])
        )
        torch.autograd.grad(objective.loss([h], p).sum(), one_hot)
        with torch.no_grad():
            for start in range(0, candidates, 128):  # the attack's eval_batch
                forward_slot(slot, encoder, ids.expand(min(128, candidates - start), -1))

    return step


def unlearndiff_step(encoder, unet, length: int = 5, eval_points: int = 4) -> Callable[[], None]:
    """One unlearndiff step (see the module docstring)."""
    import torch
    import torch.nn.functional as F

    from saferclip_diffusers.attacks.conditioning import forward_slot
    from saferclip_diffusers.attacks.soft_tokens import embedding_matrix, with_soft_rows

    slot, weight = _slot(encoder), embedding_matrix(encoder)
    dev, vocab = weight.device, weight.shape[0]
    size = unet.config.sample_size
    ids = torch.zeros(1, 77, dtype=torch.long, device=dev)
    x = torch.zeros(1, unet.config.in_channels, size, size, device=dev)
    t = torch.zeros(1, dtype=torch.long, device=dev)

    def step() -> None:
        a = torch.zeros(length, vocab, device=dev, requires_grad=True)
        one_hot = torch.zeros(length, vocab, device=dev)
        rows = (one_hot + a - a.detach()) @ weight
        hidden, _ = forward_slot(
            slot, encoder, ids, with_soft_rows(encoder, ids, list(range(1, length + 1)), rows[None])
        )
        loss = F.mse_loss(unet(x, t, encoder_hidden_states=hidden).sample, x)
        torch.autograd.grad(loss, a)
        with torch.no_grad():
            cond = forward_slot(slot, encoder, ids)[0]
            unet(
                x.expand(eval_points, -1, -1, -1),
                t.expand(eval_points),
                encoder_hidden_states=cond.expand(eval_points, -1, -1),
            )

    return step


def real_size_flops(candidates: tuple[int, ...] = CANDIDATES, eval_points: int = 4) -> dict:
    clip, unet = real_size_models()
    unet_step = count_flops(unlearndiff_step(clip, unet, eval_points=eval_points))
    text = {c: count_flops(swap_gcg_step(clip, c)) for c in candidates}
    encoder_forward = count_flops(_forward(clip))
    return {
        "models": "CLIP-L text tower (123.1 M) + SD 1.5 UNet (859.5 M) at 64x64 latents, random weights, meta tensors",
        "swap_gcg_adversarial_tokens": 20,  # MMA's length; the one-hot products are ~3 % of a 1-candidate step
        "unlearndiff_prefix_tokens": 5,
        "unlearndiff_eval_points": eval_points,
        "unlearndiff_step_gflop": unet_step / 1e9,
        "encoder_forward_gflop": encoder_forward / 1e9,
        "swap_gcg_step_gflop": {str(c): f / 1e9 for c, f in text.items()},
        "ratio_at_equal_steps": {str(c): unet_step / f for c, f in text.items()},
        "ratio_per_prompt_scored": {str(c): unet_step / (f / c) for c, f in text.items()},
        "max_candidates_for_50x": max(
            (c for c in range(1, 257) if unet_step / count_step_estimate(text, c) >= 50), default=0
        ),
    }


def count_step_estimate(text: dict[int, int], c: int) -> float:
    """FLOPs of a swap-gcg step with ``c`` candidates, linear between the counted ones (cost is affine in c)."""
    (c0, f0), (c1, f1) = sorted(text.items())[0], sorted(text.items())[-1]
    return f0 + (f1 - f0) * (c - c0) / (c1 - c0)


def _forward(encoder) -> Callable[[], None]:
    import torch

    ids = torch.zeros(1, 77, dtype=torch.long, device=encoder.get_input_embeddings().weight.device)

    def run() -> None:
        with torch.no_grad():
            encoder(ids)

    return run


def tiny_timings(quick: bool, targets: list[str]) -> dict:
    """Real attacks on the tiny SD pipeline: seconds and counted FLOPs per step, and the search's quality."""
    from saferclip_diffusers.attacks import get_attack
    from saferclip_diffusers.attacks.conditioning import core_ids

    from .attack_robustness import _pipe

    steps = 3 if quick else 15
    pipe = _pipe()
    encoder, unet = pipe.text_encoder, pipe.unet
    n_adv = len(core_ids(pipe.tokenizer, targets[0]))  # free mode: the target's own length
    attacks = {
        f"swap-gcg c={c}": dict(name="swap-gcg", steps=steps, candidates=c, **SEARCH) for c in CANDIDATES
    }
    attacks["unlearndiff"] = dict(
        name="unlearndiff", steps=steps, per_timestep=2, timesteps=steps, image_steps=4, eval_points=4
    )
    rows = {}
    for label, kwargs in attacks.items():
        kwargs = dict(kwargs)
        name = kwargs.pop("name")
        short = get_attack(name, **{**kwargs, "steps": 1})
        attack = get_attack(name, **kwargs)
        flops = (
            count_flops(lambda a=attack: a.run(pipe, targets[0]))
            - count_flops(lambda a=short: a.run(pipe, targets[0]))
        ) / (steps - 1)
        runs = [attack.run(pipe, t) for t in targets]
        rows[label] = {
            "seconds_per_step": sum(r.seconds for r in runs) / len(runs) / steps,
            "counted_gflop_per_step": flops / 1e9,
            "best_loss": sum(r.best_loss for r in runs) / len(runs),
            "success@0.1": sum(r.best_loss <= 0.1 for r in runs) / len(runs) if name == "swap-gcg" else None,
        }
    c = {str(k): rows[f"swap-gcg c={k}"] for k in CANDIDATES}
    transcribed = {
        "unlearndiff": count_flops(unlearndiff_step(encoder, unet)) / 1e9,
        **{f"swap-gcg c={k}": count_flops(swap_gcg_step(encoder, k, n_adv)) / 1e9 for k in CANDIDATES},
    }
    return {
        "steps": steps,
        "targets": len(targets),
        "attacks": rows,
        "transcribed_gflop_per_step": transcribed,
        "time_ratio": {
            k: rows["unlearndiff"]["seconds_per_step"] / v["seconds_per_step"] for k, v in c.items()
        },
    }


def bench_cost(quick: bool, real: bool, targets: list[str]) -> dict:
    out: dict = {"tiny": tiny_timings(quick, targets[: 2 if quick else len(targets)])}
    if real:
        out["real_size"] = real_size_flops()
    return out


def markdown(c: dict) -> list[str]:
    t = c["tiny"]
    lines = []
    if "real_size" in c:
        r = c["real_size"]
        lines += [
            "## FLOPs of one attack step at real size (random weights; FlopCounterMode on meta tensors)",
            "",
            f"{r['models']}. unlearndiff: {r['unlearndiff_step_gflop']:.0f} GFLOP/step (encoder + UNet forward "
            f"and input-gradient backward, then 1 encoder + 4 UNet scoring forwards); one CLIP-L forward of 77 "
            f"tokens: {r['encoder_forward_gflop']:.1f} GFLOP.",
            "",
            "| swap-gcg candidates | GFLOP/step | unlearndiff / swap-gcg at equal steps | per prompt scored |",
            "|---|---|---|---|",
        ]
        for k, v in r["swap_gcg_step_gflop"].items():
            lines.append(
                f"| {k} | {v:.1f} | {r['ratio_at_equal_steps'][k]:.1f}x | {r['ratio_per_prompt_scored'][k]:.0f}x |"
            )
        lines += [
            "",
            f"50x at equal steps holds up to {r['max_candidates_for_50x']} candidates per step.",
            "",
        ]
    lines += [
        f"## Tiny SD, the real attacks side by side ({t['steps']} steps, {t['targets']} targets, one thread; "
        "random weights)",
        "",
        "| attack | s/step | GFLOP/step counted | GFLOP/step transcribed | mean best distance | success@0.1 |",
        "|---|---|---|---|---|---|",
    ]
    for k, v in t["attacks"].items():
        ok = "" if v["success@0.1"] is None else f"{v['success@0.1']:.2f}"
        lines.append(
            f"| {k} | {v['seconds_per_step']:.3f} | {v['counted_gflop_per_step']:.4f} | "
            f"{t['transcribed_gflop_per_step'][k]:.4f} | {v['best_loss']:.3f} | {ok} |"
        )
    lines += [
        "",
        "unlearndiff's best distance is its denoising loss, not the conditioning distance.",
        "Time ratio unlearndiff / swap-gcg per step (tiny): "
        + ", ".join(f"c={k}: {v:.1f}x" for k, v in t["time_ratio"].items()),
        "",
    ]
    return lines
