"""UnlearnDiffAtk-style attack through the UNet (Zhang et al., ECCV 2024): the costly white-box baseline.

For a target prompt ``p*``, the ORIGINAL pipeline first makes an image of it (latents ``x0``; the VAE round
trip of the original code is skipped: the attack works on the latents the UNet produced). Then ``k`` prefix
tokens are optimised so that the SAFE pipeline (safe encoder + the unchanged UNet) denoises that image well:
``min_a E_{t, eps} || target(eps, x0, t) - unet(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t, H_T(a + p*)) ||^2``
(``target`` = eps, or the velocity for v-prediction models). As in UnlearnDiffAtk: the prefix is a relaxed
one-hot on the probability simplex (uniform init), the forward uses one token sampled per row with a
straight-through gradient (clipped to [-1, 1]), Adam (lr 0.01, weight decay 0.1), ``per_timestep`` steps at
each timestep of an even grid over [0, 1000) with fresh noise every step.

Unlike the original (which generates and classifies an image after each timestep block), the prompt is scored
after every step by its denoising loss on a fixed, seeded set of (t, noise) pairs, through its re-tokenized
text (``argmax`` ids decoded + the target): that is the ``history``/``losses`` of the result, and image-level
success is left to the evaluation runner. SD 1.x/2.x only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .ban import BAN_RULES, allowed_mask, banned_ids
from .base import AttackBudget, AttackResult, make_budget, register
from .conditioning import core_ids, encoder_slots, forward_slot, full_ids
from .safety import check_target
from .soft_tokens import embedding_matrix, with_soft_rows


@dataclass
class UnlearnDiffBudget(AttackBudget):
    steps: int = 2000
    per_timestep: int = 40
    timesteps: int = 50
    length: int = 5
    lr: float = 0.01
    weight_decay: float = 0.1
    image_steps: int = 25
    guidance: float = 7.5
    eval_points: int = 4
    ban: str = "none"

    def __post_init__(self) -> None:
        super().__post_init__()
        ok = (
            self.per_timestep >= 1
            and self.timesteps >= 1
            and 1 <= self.length <= 60
            and self.lr > 0
            and self.image_steps >= 1
            and self.eval_points >= 1
            and self.ban in BAN_RULES
        )
        if not ok:
            raise ValueError(
                "unlearndiff budget: per_timestep, timesteps, image_steps, eval_points must be >= 1, "
                f"length in [1, 60], lr > 0, ban one of {BAN_RULES}"
            )


PRESETS: dict[str, dict] = {
    "tiny": dict(steps=4, per_timestep=2, timesteps=2, length=2, image_steps=2, eval_points=2),
    "gpu-quick": dict(steps=200, per_timestep=20, timesteps=10),
    "gpu": dict(steps=800, per_timestep=40, timesteps=20),
    "paper": dict(steps=2000, per_timestep=40, timesteps=50),
}


def project_simplex(x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row of ``x`` onto the probability simplex over the ``allowed`` ids."""
    v = x[:, allowed]
    u, _ = v.sort(dim=1, descending=True)
    css = u.cumsum(dim=1) - 1
    idx = torch.arange(1, v.shape[1] + 1, device=x.device, dtype=x.dtype)
    rho = ((u - css / idx) > 0).sum(dim=1, keepdim=True)
    theta = css.gather(1, rho - 1) / rho
    out = torch.zeros_like(x)
    out[:, allowed] = (v - theta).clamp_min(0)
    return out


@register("unlearndiff")
class UnlearnDiff:
    def __init__(self, name: str, budget: UnlearnDiffBudget):
        self.name, self.budget = name, budget

    @classmethod
    def from_budget(cls, name: str, preset: str | None = None, **kwargs) -> UnlearnDiff:
        return cls(name, make_budget(UnlearnDiffBudget, name, PRESETS, preset, kwargs))

    def _target_latents(self, pipe, target: str, seed: int) -> torch.Tensor:
        b = self.budget
        device = pipe.unet.device
        generator = torch.Generator(device="cpu").manual_seed(seed)
        pipe.set_progress_bar_config(disable=True)
        out = pipe(
            target,
            safety_scale=0.0,
            num_inference_steps=b.image_steps,
            guidance_scale=b.guidance,
            generator=generator,
            output_type="latent",
        )
        return out.images.to(device=device, dtype=torch.float32)

    def run(self, pipe, target: str, *, seed: int = 0, progress: bool = False) -> AttackResult:
        from diffusers import DDPMScheduler
        from tqdm.auto import tqdm

        check_target(target)
        if getattr(pipe, "text_encoder_2", None) is not None:
            raise ValueError(
                "unlearndiff supports SD 1.x/2.x pipelines only; use swap-gcg or ring-a-bell for SDXL"
            )
        b = self.budget
        start = time.perf_counter()
        (slot,) = encoder_slots(pipe)
        encoder, unet = slot.safe, pipe.unet
        noise_sched = DDPMScheduler.from_config(pipe.scheduler.config)
        abar = noise_sched.alphas_cumprod.to(unet.device)
        v_pred = noise_sched.config.prediction_type == "v_prediction"
        x0 = self._target_latents(pipe, target, int(b.seed) + int(seed))
        weight = embedding_matrix(encoder)
        vocab = weight.shape[0]
        allowed = allowed_mask(vocab, banned_ids([slot.tokenizer], b.ban)).to(weight.device)
        target_core = core_ids(slot.tokenizer, target, 75 - b.length)
        grid = [
            int((j + 0.5) * noise_sched.config.num_train_timesteps / b.timesteps) for j in range(b.timesteps)
        ]

        def noised(t: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            a = abar[t].view(-1, 1, 1, 1)
            xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
            return xt, (a.sqrt() * eps - (1 - a).sqrt() * x0) if v_pred else eps

        def denoise_loss(cond: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
            xt, goal = noised(t, eps)
            pred = unet(
                xt.to(unet.dtype), t, encoder_hidden_states=cond.expand(len(t), -1, -1).to(unet.dtype)
            ).sample
            return F.mse_loss(pred.float(), goal.float())

        def score(prompt: str, eval_t: torch.Tensor, eval_eps: torch.Tensor) -> float:
            with torch.no_grad():
                ids = full_ids(slot, torch.tensor([core_ids(slot.tokenizer, prompt)]))
                return float(denoise_loss(forward_slot(slot, encoder, ids)[0], eval_t, eval_eps))

        runs, steps_done = [], 0
        for r in range(b.restarts):
            gen = torch.Generator().manual_seed(int(b.seed) + int(seed) + 1000 + r)
            eval_t = torch.tensor(
                [grid[int(i)] for i in torch.randint(len(grid), (b.eval_points,), generator=gen)],
                device=unet.device,
            )
            eval_eps = torch.randn((b.eval_points, *x0.shape[1:]), generator=gen).to(unet.device)

            a = torch.zeros(b.length, vocab, device=weight.device)
            a[:, allowed] = 1.0 / int(allowed.sum())
            a.requires_grad_(True)
            a.register_hook(lambda g: g.clamp(-1, 1))
            opt = torch.optim.Adam([a], lr=b.lr, weight_decay=b.weight_decay)
            target_loss = score(target, eval_t, eval_eps)
            best, history = (target_loss, target), []
            for step in tqdm(
                range(b.steps),
                desc=f"unlearndiff restart {r + 1}/{b.restarts}",
                disable=not progress,
                leave=False,
            ):
                t = torch.tensor([grid[(step // b.per_timestep) % len(grid)]], device=unet.device)
                eps = torch.randn(x0.shape, generator=gen).to(unet.device)
                with torch.no_grad():
                    probs = (a.detach().clamp_min(0) + 1e-12 * allowed).float().cpu()
                    sample = torch.multinomial(probs, 1, generator=gen).flatten().to(weight.device)
                one_hot = F.one_hot(sample, vocab).to(a.dtype)
                rows = (one_hot + a - a.detach()) @ weight
                ids = full_ids(slot, torch.tensor([sample.tolist() + target_core]))
                embeds = with_soft_rows(
                    encoder, ids.to(weight.device), list(range(1, b.length + 1)), rows[None]
                )
                hidden, _ = forward_slot(slot, encoder, ids, embeds)
                loss = denoise_loss(hidden, t, eps)
                # gradient for the prefix only: no parameter gradients of the pipeline's models are computed
                # or left behind (loss.backward() would fill .grad of every UNet and encoder weight)
                (a.grad,) = torch.autograd.grad(loss, a)
                opt.step()
                with torch.no_grad():
                    a.copy_(project_simplex(a, allowed))
                steps_done += 1
                prefix = slot.tokenizer.decode(
                    a.detach().argmax(dim=1).tolist(), clean_up_tokenization_spaces=False
                )
                prompt = f"{prefix} {target}"
                value = score(prompt, eval_t, eval_eps)
                if value < best[0]:
                    best = (value, prompt)
                history.append(best[0])
            runs.append((best[0], best[1], history, target_loss))
        runs.sort(key=lambda x: x[0])
        meta = {
            "attack": self.name,
            "mode": "prefix",
            "objective": "denoising MSE on the original model's image",
            "encoder": "safe",
            "ban": b.ban,
            "budget": b.to_dict(),
            "target_loss": [x[3] for x in runs],
            "slots": [slot.name],
            "transfer": False,
        }
        return AttackResult(
            target=target,
            prompts=[x[1] for x in runs],
            losses=[x[0] for x in runs],
            history=runs[0][2],
            steps=steps_done,
            seconds=time.perf_counter() - start,
            meta=meta,
        )
