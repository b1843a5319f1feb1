"""The model card (README.md) of a training export: method, data, validation, config and licences."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import yaml

from .settings import TrainConfig

KNOWN_LICENCES = {
    "openai/clip-vit-large-patch14": "MIT (OpenAI CLIP)",
    "stabilityai/stable-diffusion-xl-base-1.0": "CreativeML Open RAIL++-M (SDXL; text_encoder_2 is OpenCLIP ViT-bigG/14)",
    "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k": "MIT (LAION OpenCLIP)",
}
DATA_LICENCES = {
    "unpaired": "see the sources listed above",
    "visu": "ViSU (aimagelab/ViSU-Text): gated, non-commercial use only",
    "nsfwcaps": "NSFW-Caps (Adeely93/NSFWCaps): CC BY-NC 4.0",
    "pairs": "your own data: check its licence",
}
METHOD_TEXT = {
    "saferclip": "SafeR-CLIP (arXiv 2511.16743): proximity targets (each unsafe caption is redirected to its nearest "
    "safe caption in the frozen encoder's space), relative redirection whose only negative is the sample's "
    "own unsafe counterpart, easy-to-hard curriculum, and preservation terms.",
    "safeclip": "Safe-CLIP (arXiv 2311.16254) baseline: its 8 redirection/preservation terms with weights "
    "(0.1, 0.1, 0.1, 0.2, 0.25, 0.25, 0.25, 0.5) toward the paired safe caption.",
    "des": "DES (arXiv 2501.18877, NeurIPS 2025): full fine-tune of the token states (`last_hidden_state`): safe "
    "preservation with concept augmentation, each unsafe prompt redirected to the most distant safe codebook "
    "entry minus the concept direction, and the concept prompt neutralised toward the empty prompt.",  # methods hook
}


@dataclass
class RunSummary:
    """What the card says about the run (gathered by the trainer; the export needs no trainer)."""

    data_description: dict
    n_unsafe: int
    n_safe: int
    n_val_unsafe: int
    global_step: int
    world_size: int = 1
    validation: list[dict] = field(default_factory=list)
    exported_epoch: int | None = None  # the best-validation epoch exported (early stopping); None = the last
    exported_step: int | None = None


def _exported(run: RunSummary) -> str:
    if run.exported_epoch is None:
        return f"Exported weights: the last ones (step {run.global_step})."
    return (
        f"Exported weights: **epoch {run.exported_epoch}** (step {run.exported_step}), the best validation "
        f"recall sum of the trained epochs (early stopping keeps the best); training ran {run.global_step} steps."
    )


def _metrics_table(rows: list[dict]) -> str:
    if not rows:
        return "No validation split was configured.\n"
    keys = [k for k in rows[-1] if k not in ("epoch", "step")]
    shown = [rows[0], rows[-1]] if len(rows) > 1 else rows
    lines = [
        "| metric | " + " | ".join(f"epoch {r['epoch']} (step {r['step']})" for r in shown) + " |",
        "|---|" + "---|" * len(shown),
    ]
    for k in keys:
        vals = [r.get(k) for r in shown]
        lines.append(
            f"| `{k}` | " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in vals) + " |"
        )
    return "\n".join(lines) + "\n"


def model_card(cfg: TrainConfig, run: RunSummary, prompts: dict[str, list[str]]) -> str:
    random = any(e.is_random() for e in cfg.encoders)
    bases = [e.model for e in cfg.encoders]
    slots = ", ".join(
        f"`{e.slot}/` ({e.resolved_export_class()}, from `{e.model}`"
        + (f" subfolder `{e.subfolder}`" if e.subfolder else "")
        + ")"
        for e in cfg.encoders
    )
    base_pipe, extra_import = repr(cfg.export.base_pipeline or "<base pipeline>"), ""
    if (cfg.export.base_pipeline or "").startswith("tiny:"):
        base_pipe = f"tiny_model_dir({cfg.export.base_pipeline.split(':', 1)[1]!r})"
        extra_import = "from saferclip_diffusers.tiny import tiny_model_dir\n"
    sdxl = any(e.slot == "text_encoder_2" for e in cfg.encoders)
    pipe_cls = "SaferStableDiffusionXLPipeline" if sdxl else "SaferStableDiffusionPipeline"
    method = METHOD_TEXT.get(cfg.method, f"method `{cfg.method}`.")
    desc = run.data_description
    sources = "\n".join(f"- {s}" for s in desc.get("sources", desc.get("files", [])))
    licences = "\n".join(
        f"- `{b}`: {KNOWN_LICENCES.get(b, 'check the base model licence')}" for b in dict.fromkeys(bases)
    )
    front = {
        "library_name": "transformers",
        "license": "other",
        "tags": ["saferclip", "clip", "text-encoder", "stable-diffusion", "diffusers", "safety", cfg.method],
    }
    if not random:
        front["base_model"] = bases if len(bases) > 1 else bases[0]
    warning = (
        "\n> **A random-weight test model.** Built offline for tests and demos; its numbers say nothing "
        "about real models and it gives no safety.\n"
        if random
        else ""
    )
    lora = (
        f" (LoRA r={cfg.lora.r}, alpha={cfg.lora.alpha}, dropout={cfg.lora.dropout}, merged)"
        if cfg.finetune == "lora"
        else ""
    )
    return f"""---
{yaml.safe_dump(front, sort_keys=False).strip()}
---

# {cfg.name}: safe CLIP text encoder{"s" if len(cfg.encoders) > 1 else ""} ({cfg.method})
{warning}
Fine-tuned with [saferclip-diffusers](https://arxiv.org/abs/2511.16743) so that unsafe prompts are encoded
close to a safe meaning while safe prompts keep their embedding. Swap it into a diffusion pipeline at zero
inference cost. Contents: {slots}.

## Use

```python
from saferclip_diffusers import {pipe_cls}
{extra_import}pipe = {pipe_cls}.from_pretrained({base_pipe}, safe_text_encoder="<this folder or repo>")

# or plain diffusers / transformers
from transformers import CLIPTextModel
text_encoder = CLIPTextModel.from_pretrained("<this folder or repo>", subfolder="text_encoder")
```

## Method

{method} Fine-tuning: {cfg.finetune}{lora};
{"text and image towers" if cfg.train_vision else "text tower only (image tower frozen)"}; targets: {cfg.targets};
curriculum: {"on" if cfg.curriculum_enabled else "off"}; {cfg.optim.epochs} epochs, lr {cfg.optim.lr}, batch {cfg.optim.batch_size}
x {cfg.optim.grad_accum} accumulation x {run.world_size} process(es); {run.global_step} optimizer steps.
{_exported(run)}

## Training data

Format `{desc.get("format")}`: {run.n_unsafe} unsafe and {run.n_safe} safe captions after de-duplication
and selection ({run.n_val_unsafe} unsafe held out for validation). Sources:
{sources}

Selection: `{json.dumps({k: v for k, v in desc.items() if k.endswith("selection")})}`.
`training_prompts.json` lists the {len(prompts["unsafe"])} unsafe prompts and {len(prompts["safe"])} safe captions
training used: exclude them when evaluating this encoder.

## Validation

Held-out captions; see `validation.jsonl` for every epoch (metric definitions in
`saferclip_diffusers/training/validation.py`).

{_metrics_table(run.validation)}
## Configuration

```yaml
{cfg.to_yaml().strip()}
```

## Licence

The weights derive from the base model(s); their licences apply:
{licences}

Training data: {DATA_LICENCES.get(desc.get("format"), "check the data licence")}.
Content warning: unsafe training prompts describe sexual, violent, hateful or self-harm content.
"""
