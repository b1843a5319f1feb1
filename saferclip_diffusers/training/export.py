"""Export: merged weights in the diffusers layout, a model card and the training prompts, written atomically.

The run folder becomes a loadable safe-encoder directory::

    text_encoder/            merged encoder for the pipeline's first slot (safetensors; CLIPTextModel by default)
    text_encoder_2/          SDXL's second encoder (CLIPTextModelWithProjection), when trained
    tokenizer/, tokenizer_2/ the tokenizers used in training
    clip/, clip_2/           optional full CLIPModel (text + image tower) for retrieval / zero-shot evaluation
    single_file/             optional single-file checkpoints (``export.single_file``: comfyui, a1111, ...)
    README.md                model card: method, config, data, validation metrics, licence notes
    training_prompts.json    {"unsafe": [...], "safe": [...]}: the captions training used (for overlap checks)
    export_complete.json     written LAST: every exported file with its sha256 and the config fingerprint

Everything is first written into a hidden ``.export-*`` folder inside the run folder, then moved into place;
the old marker is removed before and the new one written after, so a kill at any point leaves a folder that
``io.export_state`` reports as ``"incomplete"`` (evaluations refuse it) until an export finishes.
``CLIPTextModel.from_pretrained(run, subfolder="text_encoder")`` loads it, and so do the Safer pipelines.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from saferclip_diffusers.devices import parse_dtype
from saferclip_diffusers.io import EXPORT_MARKER, atomic_write_json, atomic_write_text, sha256_file

from .model_card import RunSummary, model_card
from .settings import EncoderSettings, TrainConfig

logger = logging.getLogger(__name__)

HUB_IGNORE = ["checkpoints/*", "cache/*", "*.tmp", ".*"]
STAGING_PREFIX = ".export-"


@dataclass
class ExportedEncoder:
    """One trained encoder as the export needs it: live (possibly LoRA-wrapped) towers and their processors."""

    settings: EncoderSettings
    text: torch.nn.Module
    tokenizer: Any
    vision: torch.nn.Module | None = None
    image_processor: Any = None


def merged_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A plain transformers model with the LoRA deltas merged in (the live, trained module is untouched)."""
    from .models import is_lora

    model = copy.deepcopy(module)
    if is_lora(model):
        model = model.merge_and_unload()
    return model.eval()


def as_export_class(model, export_class: str):
    """``CLIPTextModel`` (SD 1.x / SDXL slot 1: no projection) or ``CLIPTextModelWithProjection`` (SDXL slot 2)."""
    from transformers import CLIPTextModel

    if isinstance(model, CLIPTextModel):  # a projection-less tower (SD 2.x's text encoder, UWM)
        if export_class != "CLIPTextModel":
            raise ValueError(
                f"a CLIPTextModel without text_projection cannot be exported as {export_class}: set "
                "export_class: CLIPTextModel for this encoder"
            )
        return model.eval()
    if export_class == "CLIPTextModelWithProjection":
        return model
    if export_class == "AutoModel":  # methods hook: a generic backbone (backbones.MeanPooledTextEncoder)
        return model.model
    plain = model.text_model  # transformers 5: the tower inside WithProjection is a CLIPTextModel
    if not isinstance(plain, CLIPTextModel):
        raise TypeError(f"unexpected text tower type {type(plain).__name__}")
    return plain.eval()


def source_clip(s: EncoderSettings, allow_pickle: bool = False):
    """The full original ``CLIPModel`` an encoder comes from (None when there is none, e.g. no image_model)."""
    from transformers import CLIPModel

    from .towers import _model_type, from_pretrained, resolve_model_path

    if s.backbone == "open_clip":
        from .open_clip_convert import load_open_clip

        return load_open_clip(s.model, s.pretrained)[0]
    path = resolve_model_path(s.model, "encoder model")
    if _model_type(path, s.subfolder, s.revision, s.model) == "clip":
        return from_pretrained(
            CLIPModel,
            s.model,
            path,
            allow_pickle,
            "encoder model",
            subfolder=s.subfolder or "",
            revision=s.revision,
        )
    if s.image_model:
        return from_pretrained(
            CLIPModel,
            s.image_model,
            resolve_model_path(s.image_model, "image model"),
            allow_pickle,
            "image model",
        )
    return None


def full_clip(enc: ExportedEncoder, text, allow_pickle: bool):
    """The source CLIPModel with the trained text (and, in two-tower mode, image) tower merged in."""
    clip = source_clip(enc.settings, allow_pickle)
    if clip is None:
        logger.warning(
            "no full CLIP export for %s: no image tower configured (set image_model)", enc.settings.slot
        )
        return None
    clip.text_model.load_state_dict(text.text_model.state_dict())
    clip.text_projection.load_state_dict(text.text_projection.state_dict())
    if enc.vision is not None:
        vision = merged_copy(enc.vision)
        clip.vision_model.load_state_dict(vision.vision_model.state_dict())
        clip.visual_projection.load_state_dict(vision.visual_projection.state_dict())
    return clip.eval()


def config_fingerprint(cfg: TrainConfig) -> str:
    return hashlib.sha256(cfg.to_yaml().encode("utf-8")).hexdigest()


def write_encoders(stage: Path, cfg: TrainConfig, encoders: list[ExportedEncoder]) -> None:
    dtype = parse_dtype(cfg.export.dtype)
    want_clip = cfg.export.full_clip if cfg.export.full_clip is not None else cfg.train_vision
    for enc in encoders:
        slot = enc.settings.slot
        merged = merged_copy(enc.text)
        as_export_class(merged, enc.settings.resolved_export_class()).to(dtype).save_pretrained(
            stage / slot, safe_serialization=True
        )
        enc.tokenizer.save_pretrained(stage / slot.replace("text_encoder", "tokenizer"))
        clip = full_clip(enc, merged, cfg.allow_pickle) if want_clip else None
        if clip is not None:
            folder = stage / slot.replace("text_encoder", "clip")
            clip.to(dtype).save_pretrained(folder, safe_serialization=True)
            enc.tokenizer.save_pretrained(folder)
            if enc.image_processor is not None:
                enc.image_processor.save_pretrained(folder)


def _move_into_place(stage: Path, out: Path) -> list[str]:
    names = sorted(p.name for p in stage.iterdir())
    for name in names:
        target = out / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(stage / name, target)
    return names


def _files(out: Path, names: list[str]) -> dict[str, str]:
    files = {}
    for name in names:
        path = out / name
        for f in sorted([path] if path.is_file() else (p for p in path.rglob("*") if p.is_file())):
            files[f.relative_to(out).as_posix()] = sha256_file(f)
    return files


def export_run(
    out: str | os.PathLike,
    cfg: TrainConfig,
    encoders: list[ExportedEncoder],
    prompts: dict[str, list[str]],
    run: RunSummary,
    push_to_hub: str | None = None,
) -> Path:
    """Write the export into the run folder ``out`` (see the module docstring); optionally push it to the hub."""
    out = Path(out)
    (out / EXPORT_MARKER).unlink(missing_ok=True)  # incomplete from here until the new marker is written
    for leftover in out.glob(STAGING_PREFIX + "*"):  # a killed earlier export
        shutil.rmtree(leftover, ignore_errors=True)
    stage = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out))
    try:
        write_encoders(stage, cfg, encoders)
        atomic_write_json(stage / "training_prompts.json", prompts)
        atomic_write_text(stage / "README.md", model_card(cfg, run, prompts))
        names = _move_into_place(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    if cfg.export.single_file:
        from saferclip_diffusers.encoders.single_file import export_single_files

        export_single_files(out, out / "single_file", formats=list(cfg.export.single_file))
        names.append("single_file")
    atomic_write_json(
        out / EXPORT_MARKER,
        {
            "files": _files(out, names),
            "config_fingerprint": config_fingerprint(cfg),
            "method": cfg.method,
            "global_step": run.global_step,
            "exported_epoch": run.exported_epoch,  # None: the last weights
            "exported_step": run.exported_step if run.exported_epoch is not None else run.global_step,
        },
    )
    if push_to_hub:
        push(out, push_to_hub, private=cfg.export.private)
    return out


def export_from_trainer(
    trainer: Any, push_to_hub: str | None = None, exported_epoch: int | None = None
) -> Path:
    """Gather what :func:`export_run` needs from a set-up trainer (duck-typed: no import of the trainer).

    ``exported_epoch``: the epoch whose weights the model holds when it is not the last (best-epoch export).
    """
    from .run_folder import read_log

    model = trainer.accelerator.unwrap_model(trainer.model)
    encoders = [
        ExportedEncoder(
            b.settings,
            model.text[b.slot],
            b.towers.tokenizer,
            model.vision[b.slot] if b.slot in model.vision else None,
            b.towers.image_processor,
        )
        for b in trainer.bundles
    ]
    run = RunSummary(
        trainer.data.description,
        len(trainer.data.unsafe_texts),
        len(trainer.data.safe_texts),
        len(trainer.split.val_unsafe),
        trainer.state["global_step"],
        trainer.world,
        read_log(trainer.out / "validation.jsonl"),
        exported_epoch=exported_epoch,
        exported_step=trainer.state.get("best_epoch_step") if exported_epoch is not None else None,
    )
    return export_run(trainer.out, trainer.cfg, encoders, trainer.used_prompts(), run, push_to_hub)


def push(folder: Path, repo_id: str, private: bool = True) -> str:
    """Upload the export (not checkpoints or caches) to the Hugging Face Hub; returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(
        folder_path=str(folder),
        repo_id=repo_id,
        ignore_patterns=HUB_IGNORE,
        commit_message="Upload safe text encoder (saferclip-diffusers)",
    )
    return str(info)
