"""UWM (Unsafe Weights Manipulation, arXiv 2503.11742, code Moreno98/UWM): training-free sign flip of unsafe weights.

For every hooked ``nn.Linear`` (CLIP text towers: ``self_attn.out_proj`` of each layer) and every calibration pair
(safe sentence ``s``, unsafe sentence ``u``), with ``n[j]`` the L2 norm over valid tokens of input channel ``j`` and
``sigma[j]`` its unbiased standard deviation, the official text scorer computes

    A[i,j] = n[j] |W[i,j]|,  S[i,j] = mean_j' A[i,j'] * mean_i' A[i',j] / sigma[j]   (Eq. 8, 9)
    score[i,j] = mean over pairs of S_u[i,j] / S_s[i,j], times |W[i,j]|                (Eq. 10)

The ratio factorises (``S`` is rank one), so one batch costs one matmul instead of a B x d_out x d_in tensor:
``R[i,j] = a[i] c[j]`` with ``a = (|W| n_u) / (|W| n_s)`` and ``c = (n_u / sigma_u) / (n_s / sigma_s)``.
Scores are accumulated as the mean of per-batch means (as the official ``prune(n_batches)``) in float32.
Selection (Eq. 11, ``rule="mass"``): normalise the layer's scores to a distribution, sort ascending and flip every
weight whose cumulative mass exceeds ``tau``. ``rule="count"`` is the repo's ``Base`` rule (``kthvalue``).
The edit bakes ``W <- W * M`` (``M = alpha`` on selected entries, 1 elsewhere; biases untouched) into the weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

Tensor = torch.Tensor


def channel_stats(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Per sentence and input channel: L2 norm and unbiased std over the valid tokens (``mask`` 1).

    ``x``: [B, T, d], ``mask``: [B, T]. A sentence with fewer than two valid tokens gets std 1e-8 (the official
    guard for an empty sentence; one token has no unbiased std).
    """
    x = x.float()
    m = mask.to(x.dtype).unsqueeze(-1)
    count = m.sum(1)  # [B, 1]
    norm = (x.square() * m).sum(1).sqrt()
    mean = (x * m).sum(1) / count.clamp_min(1)
    var = ((x - mean.unsqueeze(1)).square() * m).sum(1) / (count - 1).clamp_min(1)
    std = torch.where(count > 1, var.sqrt(), torch.full_like(var, 1e-8))
    return norm, std


def batch_score(weight: Tensor, n_safe: Tensor, s_safe: Tensor, n_unsafe: Tensor, s_unsafe: Tensor) -> Tensor:
    """UWM's text-tower score of one batch of B pairs (per-pair statistics [B, d_in]) -> [d_out, d_in]."""
    w = weight.detach().float().abs()
    a = (n_unsafe @ w.T) / (n_safe @ w.T)  # [B, d_out]
    c = (n_unsafe / s_unsafe) / (n_safe / s_safe)  # [B, d_in]
    return (a.T @ c) / a.shape[0] * w


def hooked_linears(model: nn.Module, names: list[str]) -> dict[str, nn.Linear]:
    """Every ``nn.Linear`` whose attribute name is in ``names`` (the official matching), by qualified name.

    A name with dots matches the end of the qualified name (``attention.output.dense`` picks BERT's attention
    output projections and not its MLP or pooler ``dense`` layers)."""
    found = {}
    for qual, module in model.named_modules():
        if isinstance(module, nn.Linear) and any(qual == n or qual.endswith("." + n) for n in names):
            found[qual] = module
    if not found:
        raise ValueError(
            f"UWM: no nn.Linear named {names} in {type(model).__name__}; CLIP text towers use "
            "out_proj/k_proj/q_proj/v_proj/fc1/fc2, T5 uses o/q/k/v/wi/wo"
        )
    return found


class UwmScorer:
    """Accumulates UWM scores over calibration batches through forward hooks on the chosen Linears.

    Each forward pass must hold ``2B`` sentences, the B safe ones first and then their B unsafe partners, and
    :meth:`set_mask` must be given the attention mask of that pass before it runs.
    """

    def __init__(self, model: nn.Module, layers: list[str]):
        self.modules = hooked_linears(model, layers)
        self.sums: dict[str, Tensor] = {}
        self.batches = 0
        self._mask: Tensor | None = None

    def set_mask(self, mask: Tensor) -> None:
        self._mask = mask

    def _hook(self, name: str):
        def fn(module: nn.Linear, inputs, output) -> None:
            x = inputs[0]
            if x.dim() != 3:
                raise ValueError(
                    f"UWM: layer {name} sees a {x.dim()}-d input; only token-level layers can be scored"
                )
            half = x.shape[0] // 2
            n, s = channel_stats(x, self._mask)
            score = batch_score(module.weight, n[:half], s[:half], n[half:], s[half:]).cpu()
            self.sums[name] = self.sums[name] + score if name in self.sums else score

        return fn

    @contextlib.contextmanager
    def hooks(self) -> Iterator[UwmScorer]:
        handles = [m.register_forward_hook(self._hook(n)) for n, m in self.modules.items()]
        try:
            yield self
        finally:
            for h in handles:
                h.remove()

    def scores(self) -> dict[str, Tensor]:
        """Mean of the per-batch scores, per layer."""
        if not self.batches:
            raise ValueError("UWM: no calibration batch was scored")
        return {k: v / self.batches for k, v in self.sums.items()}


def select(score: Tensor, tau: float, rule: str = "mass") -> Tensor:
    """Boolean mask of the weights to manipulate (same shape as ``score``)."""
    flat = score.flatten().float()
    if rule == "mass":
        p = flat / flat.sum()
        values, order = torch.sort(p)
        chosen = torch.zeros_like(flat, dtype=torch.bool)
        chosen[order[torch.cumsum(values, 0) > tau]] = True
    elif rule == "count":
        k = int(tau * flat.numel())
        if k < 1:
            return torch.ones_like(score, dtype=torch.bool)
        chosen = flat > torch.kthvalue(flat, k).values
    else:
        raise ValueError(f"UWM: rule must be 'mass' or 'count', got {rule!r}")
    return chosen.view_as(score)


@torch.no_grad()
def apply_masks(modules: dict[str, nn.Linear], masks: dict[str, Tensor], alpha: float) -> int:
    """Bake ``W <- W * M`` (``alpha`` on selected entries, 1 elsewhere) into the weights; returns how many changed."""
    changed = 0
    for name, module in modules.items():
        sel = masks[name].to(module.weight.device)
        if alpha != 1.0:
            module.weight[sel] = module.weight[sel] * alpha
        changed += int(sel.sum()) if alpha != 1.0 else 0
    return changed


@torch.no_grad()
def score_model(
    model: nn.Module,
    tokenize,
    safe: list[str],
    unsafe: list[str],
    layers: list[str],
    batch_size: int,
    device: torch.device,
    progress: bool = True,
) -> tuple[UwmScorer, dict[str, Tensor]]:
    """Run the calibration pairs (``safe[k]``, ``unsafe[k]``) through ``model`` and return the layer scores.

    ``tokenize(texts) -> (input_ids, attention_mask)``. Padding to the longest sentence instead of 77 tokens
    changes nothing: the statistics only use valid tokens, which padding cannot reach (CLIP is causal; other
    encoders get the attention mask).
    """
    from tqdm.auto import tqdm

    if len(safe) != len(unsafe) or not safe:
        raise ValueError(
            f"UWM: need equally many safe and unsafe calibration sentences, got {len(safe)} and {len(unsafe)}"
        )
    scorer = UwmScorer(model, layers)
    model.eval().to(device)
    with scorer.hooks():
        for start in tqdm(
            range(0, len(safe), batch_size), desc="UWM calibration", disable=not progress, unit="batch"
        ):
            texts = safe[start : start + batch_size] + unsafe[start : start + batch_size]
            ids, mask = tokenize(texts)
            ids, mask = ids.to(device), mask.to(device)
            scorer.set_mask(mask)
            model(input_ids=ids, attention_mask=mask)
            scorer.batches += 1
    return scorer, scorer.scores()
