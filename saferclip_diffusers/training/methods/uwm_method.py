"""``method: uwm``: score, select and flip the unsafe weights of every configured text encoder, then export.

``python train/train.py --config uwm-sd15 --out DIR`` (or ``--config tiny method=uwm``) writes a safe-encoder
folder like every trained method, plus ``uwm_scores-<slot>.safetensors`` (raw scores and the applied mask per
layer) so the edit can be undone (flip the masked weights back) or re-thresholded without recalibrating.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ...io import atomic_save_safetensors
from ..config import TrainConfig
from ..models import load_towers
from .base import Method
from .calibration import (
    calibration_pairs,
    export_training_free,
    load_data,
    pooled,
    run_device,
    tokenize_with_mask,
)
from .uwm import apply_masks, score_model, select

logger = logging.getLogger(__name__)


class UWM(Method):
    name = "uwm"
    training_free = True

    def run(self, cfg: TrainConfig, output_dir: Path) -> Path:
        s, out, device = cfg.uwm, Path(output_dir), run_device(cfg)
        data, split = load_data(cfg)
        towers = {
            e.slot: load_towers(e, need_vision=False, allow_pickle=cfg.allow_pickle, need_projection=False)
            for e in cfg.encoders
        }
        ref = towers[cfg.encoders[cfg.mining.encoder].slot]
        ref_tok = tokenize_with_mask(ref.tokenizer)
        ref.text.to(device)
        u_idx, s_idx = calibration_pairs(
            data,
            split,
            s.calibration_size,
            s.seed,
            embed=lambda texts: pooled(ref.text, ref_tok, texts, cfg.run.encode_batch_size, device),
        )
        unsafe = [data.unsafe_texts[i] for i in u_idx]
        safe = [data.safe_texts[i] for i in s_idx]
        summary: dict = {"pairs": len(u_idx), "layers": {}}
        out.mkdir(parents=True, exist_ok=True)
        for e in cfg.encoders:
            t = towers[e.slot]
            scorer, scores = score_model(
                t.text, tokenize_with_mask(t.tokenizer), safe, unsafe, s.layers, s.batch_size, device
            )
            masks = {name: select(score, s.tau, s.rule) for name, score in scores.items()}
            changed = apply_masks(scorer.modules, masks, s.alpha)
            t.text.cpu()
            sidecar = {f"score.{k}": v.contiguous() for k, v in scores.items()}
            sidecar.update({f"mask.{k}": m.to(torch.uint8).contiguous() for k, m in masks.items()})
            atomic_save_safetensors(
                sidecar,
                out / f"uwm_scores-{e.slot}.safetensors",
                metadata={"tau": str(s.tau), "rule": s.rule, "alpha": str(s.alpha)},
            )
            total = sum(m.numel() for m in masks.values())
            summary["layers"][e.slot] = {
                "layers": len(masks),
                "weights": total,
                "changed": changed,
                "per_layer": {k: int(m.sum()) for k, m in masks.items()},
            }
            logger.info(
                "UWM %s: %d of %d weights in %d layers manipulated (alpha=%s)",
                e.slot,
                changed,
                total,
                len(masks),
                s.alpha,
            )
        prompts = {"unsafe": sorted(set(unsafe)), "safe": sorted(set(safe))}
        return export_training_free(
            out, cfg, towers, prompts, model_card(cfg, summary, data.description), summary
        )


def model_card(cfg: TrainConfig, summary: dict, description: dict) -> str:
    s = cfg.uwm
    tiny = any(e.model.startswith("tiny:") for e in cfg.encoders)
    rows = "\n".join(
        f"| `{slot}` | {v['layers']} | {v['changed']} / {v['weights']} |"
        for slot, v in summary["layers"].items()
    )
    warning = (
        "\n> **Tiny random-weight test model.** Built offline for tests; its numbers say nothing about real "
        "models and it gives no safety.\n"
        if tiny
        else ""
    )
    sources = "\n".join(f"- {x}" for x in description.get("sources", description.get("files", [])))
    return f"""---
library_name: transformers
license: other
tags: [saferclip, uwm, clip, text-encoder, stable-diffusion, diffusers, safety]
---

# {cfg.name}: UWM-edited text encoder{"s" if len(cfg.encoders) > 1 else ""}
{warning}
Training-free Unsafe Weights Manipulation (UWM, arXiv 2503.11742, official code Moreno98/UWM): for each
`nn.Linear` named {s.layers} the activation-based importance score compares {summary["pairs"]} unsafe prompts with
their safe partners; the weights holding the top {1 - s.tau:.3g} of each layer's score mass
(rule `{s.rule}`, tau {s.tau}) are multiplied by alpha = {s.alpha} (biases untouched).

| slot | layers | weights changed |
|---|---|---|
{rows}

`uwm_scores-<slot>.safetensors` holds the raw scores and masks (multiply the masked weights by 1/alpha to undo).
`training_prompts.json` lists the calibration prompts: exclude them when evaluating. Load like any safe encoder:
`SaferStableDiffusionPipeline.from_pretrained(base, safe_text_encoder="<this folder>")`.

UWM's paper evaluates CLIP retrieval only; its effect on image generation is what this project's evaluations
measure. Calibration data:
{sources}

```yaml
{cfg.to_yaml().strip()}
```
"""
