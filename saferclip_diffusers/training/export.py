"""Export: merged weights in the diffusers layout, a model card and the training prompts.

The run folder becomes a loadable safe-encoder directory::

    text_encoder/            merged encoder for the pipeline's first slot (safetensors; CLIPTextModel by default)
    text_encoder_2/          SDXL's second encoder (CLIPTextModelWithProjection), when trained
    tokenizer/, tokenizer_2/ the tokenizers used in training
    clip/, clip_2/           optional full CLIPModel (text + image tower) for retrieval / zero-shot evaluation
    README.md                model card: method, config, data, validation metrics, licence notes
    training_prompts.json    {"unsafe": [...], "safe": [...]}: the captions training used (for overlap checks)

``CLIPTextModel.from_pretrained(run, subfolder="text_encoder")`` loads it, and so do the Safer pipelines
(``safe_text_encoder=run``). Checkpoints and caches stay in the folder but are not pushed to the hub.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import yaml

from saferclip_diffusers import _compat

_compat.patch_cpu_torchvision()

from transformers import CLIPModel, CLIPTextModel, CLIPTextModelWithProjection  # noqa: E402

from .models import is_lora, resolve_model_path  # noqa: E402

if TYPE_CHECKING:
    from .trainer import Trainer

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
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
HUB_IGNORE = ["checkpoints/*", "cache/*", "*.tmp", ".*"]


def merged_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A plain transformers model with the LoRA deltas merged in (the live, trained module is untouched)."""
    model = copy.deepcopy(module)
    if is_lora(model):
        model = model.merge_and_unload()
    return model.eval()


def as_export_class(model: CLIPTextModelWithProjection, export_class: str):
    """``CLIPTextModel`` (SD 1.x / SDXL slot 1: no projection) or ``CLIPTextModelWithProjection`` (SDXL slot 2)."""
    if export_class == "CLIPTextModelWithProjection":
        return model
    if export_class == "AutoModel":  # methods hook: a generic backbone (backbones.MeanPooledTextEncoder)
        return model.model
    plain = model.text_model  # transformers 5: the tower inside WithProjection is a CLIPTextModel
    if not isinstance(plain, CLIPTextModel):
        raise TypeError(f"unexpected text tower type {type(plain).__name__}")
    return plain.eval()


def source_clip(s, allow_pickle: bool = False) -> CLIPModel | None:
    """The full original ``CLIPModel`` an encoder comes from (None when there is none, e.g. no image_model)."""
    from .models import _model_type

    if s.backbone == "open_clip":
        from .open_clip_convert import load_open_clip

        return load_open_clip(s.model, s.pretrained)[0]
    path = resolve_model_path(s.model)
    if _model_type(path, s.subfolder, s.revision) == "clip":
        return CLIPModel.from_pretrained(path, subfolder=s.subfolder or "", revision=s.revision, use_safetensors=not allow_pickle)
    if s.image_model:
        return CLIPModel.from_pretrained(resolve_model_path(s.image_model), use_safetensors=not allow_pickle)
    return None


def full_clip_export(trainer: Trainer, bundle, text: CLIPTextModelWithProjection) -> CLIPModel | None:
    """The source CLIPModel with the trained text (and, in two-tower mode, image) tower merged in."""
    clip = source_clip(bundle.settings, trainer.cfg.allow_pickle)
    if clip is None:
        logger.warning("no full CLIP export for %s: no image tower configured (set image_model)", bundle.slot)
        return None
    clip.text_model.load_state_dict(text.text_model.state_dict())
    clip.text_projection.load_state_dict(text.text_projection.state_dict())
    visions = trainer.accelerator.unwrap_model(trainer.model).vision
    if bundle.slot in visions:
        vision = merged_copy(visions[bundle.slot])
        clip.vision_model.load_state_dict(vision.vision_model.state_dict())
        clip.visual_projection.load_state_dict(vision.visual_projection.state_dict())
    return clip.eval()


def _metrics_table(rows: list[dict]) -> str:
    if not rows:
        return "No validation split was configured.\n"
    keys = [k for k in rows[-1] if k not in ("epoch", "step")]
    shown = [rows[0], rows[-1]] if len(rows) > 1 else rows
    lines = ["| metric | " + " | ".join(f"epoch {r['epoch']} (step {r['step']})" for r in shown) + " |",
             "|---|" + "---|" * len(shown)]
    for k in keys:
        vals = [r.get(k) for r in shown]
        lines.append(f"| `{k}` | " + " | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in vals) + " |")
    return "\n".join(lines) + "\n"


def model_card(trainer: Trainer, prompts: dict[str, list[str]], validation: list[dict]) -> str:
    cfg, data = trainer.cfg, trainer.data
    tiny = any(e.model.startswith("tiny:") or "tiny" in e.model for e in cfg.encoders)
    bases = [e.model for e in cfg.encoders]
    slots = ", ".join(f"`{e.slot}/` ({e.resolved_export_class()}, from `{e.model}`"
                      + (f" subfolder `{e.subfolder}`" if e.subfolder else "") + ")" for e in cfg.encoders)
    base_pipe, extra_import = repr(cfg.export.base_pipeline or "<base pipeline>"), ""
    if (cfg.export.base_pipeline or "").startswith("tiny:"):
        base_pipe = f"tiny_model_dir({cfg.export.base_pipeline.split(':', 1)[1]!r})"
        extra_import = "from saferclip_diffusers.tiny import tiny_model_dir\n"
    sdxl = any(e.slot == "text_encoder_2" for e in cfg.encoders)
    pipe_cls = "SaferStableDiffusionXLPipeline" if sdxl else "SaferStableDiffusionPipeline"
    method = ("SafeR-CLIP (arXiv 2511.16743): proximity targets (each unsafe caption is redirected to its nearest "
              "safe caption in the frozen encoder's space), relative redirection whose only negative is the sample's "
              "own unsafe counterpart, easy-to-hard curriculum, and preservation terms."
              if cfg.method == "saferclip" else
              "Safe-CLIP (arXiv 2311.16254) baseline: its 8 redirection/preservation terms with weights "
              "(0.1, 0.1, 0.1, 0.2, 0.25, 0.25, 0.25, 0.5) toward the paired safe caption.")
    if cfg.method == "des":  # methods hook
        from .methods.des import CARD_TEXT as method
    desc = data.description
    sources = "\n".join(f"- {s}" for s in desc.get("sources", desc.get("files", [])))
    licences = "\n".join(f"- `{b}`: {KNOWN_LICENCES.get(b, 'check the base model licence')}" for b in dict.fromkeys(bases))
    front = {"library_name": "transformers", "license": "other", "tags": [
        "saferclip", "clip", "text-encoder", "stable-diffusion", "diffusers", "safety"] + (["safe-clip"] if cfg.method == "safeclip" else [])}
    if not tiny:
        front["base_model"] = bases if len(bases) > 1 else bases[0]
    warning = ("\n> **Tiny random-weight test model.** Built offline for tests and demos; its numbers say nothing "
               "about real models and it gives no safety.\n" if tiny else "")
    return f"""---
{yaml.safe_dump(front, sort_keys=False).strip()}
---

# {cfg.name}: safe CLIP text encoder{'s' if len(cfg.encoders) > 1 else ''} ({cfg.method})
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

{method} Fine-tuning: {cfg.finetune}{f" (LoRA r={cfg.lora.r}, alpha={cfg.lora.alpha}, dropout={cfg.lora.dropout}, merged)" if cfg.finetune == "lora" else ""};
{"text and image towers" if cfg.train_vision else "text tower only (image tower frozen)"}; targets: {cfg.targets};
curriculum: {"on" if cfg.curriculum_enabled else "off"}; {cfg.optim.epochs} epochs, lr {cfg.optim.lr}, batch {cfg.optim.batch_size}
x {cfg.optim.grad_accum} accumulation x {trainer.world} process(es); {trainer.state['global_step']} optimizer steps.

## Training data

Format `{desc.get('format')}`: {len(data.unsafe_texts)} unsafe and {len(data.safe_texts)} safe captions after de-duplication
and selection ({len(trainer.split.val_unsafe)} unsafe held out for validation). Sources:
{sources}

Selection: `{json.dumps({k: v for k, v in desc.items() if k.endswith('selection')})}`.
`training_prompts.json` lists the {len(prompts['unsafe'])} unsafe prompts and {len(prompts['safe'])} safe captions
training used: exclude them when evaluating this encoder.

## Validation

Held-out captions; see `validation.jsonl` for every epoch (metric definitions in
`saferclip_diffusers/training/validation.py`).

{_metrics_table(validation)}
## Configuration

```yaml
{cfg.to_yaml().strip()}
```

## Licence

The weights derive from the base model(s); their licences apply:
{licences}

Training data: {DATA_LICENCES.get(desc.get('format'), 'check the data licence')}.
Content warning: unsafe training prompts describe sexual, violent, hateful or self-harm content.
"""


def _write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False))
    os.replace(tmp, path)


def export_run(trainer: Trainer, out: Path, push_to_hub: str | None = None) -> Path:
    """Write the export into ``out`` (see the module docstring); optionally push it to ``push_to_hub``."""
    cfg = trainer.cfg
    dtype = DTYPES[cfg.export.dtype]
    model = trainer.accelerator.unwrap_model(trainer.model)
    full_clip = cfg.export.full_clip if cfg.export.full_clip is not None else cfg.train_vision
    for bundle in trainer.bundles:
        slot = bundle.slot
        merged = merged_copy(model.text[slot])
        as_export_class(merged, bundle.settings.resolved_export_class()).to(dtype).save_pretrained(
            out / slot, safe_serialization=True)
        bundle.towers.tokenizer.save_pretrained(out / slot.replace("text_encoder", "tokenizer"))
        if full_clip:
            clip = full_clip_export(trainer, bundle, merged)
            if clip is not None:
                folder = out / slot.replace("text_encoder", "clip")
                clip.to(dtype).save_pretrained(folder, safe_serialization=True)
                bundle.towers.tokenizer.save_pretrained(folder)
                if bundle.towers.image_processor is not None:
                    bundle.towers.image_processor.save_pretrained(folder)
    prompts = trainer.used_prompts()
    _write_json_atomic(out / "training_prompts.json", prompts)
    validation = [json.loads(x) for x in (out / "validation.jsonl").read_text().splitlines()] if (out / "validation.jsonl").is_file() else []
    card = model_card(trainer, prompts, validation)
    tmp = out / f".README.md.{os.getpid()}.tmp"
    tmp.write_text(card)
    os.replace(tmp, out / "README.md")
    if push_to_hub:
        push(out, push_to_hub, private=cfg.export.private)
    return out


def push(folder: Path, repo_id: str, private: bool = True) -> str:
    """Upload the export (not checkpoints or caches) to the Hugging Face Hub; returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, ignore_patterns=HUB_IGNORE,
                             commit_message="Upload safe text encoder (saferclip-diffusers)")
    return str(info)
