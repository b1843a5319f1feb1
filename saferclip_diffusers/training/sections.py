"""The sections of a training config (``lora:``, ``encoders:``, ``data:``, ``mining:``, ``curriculum:``,
``loss:``, ``optim:``, ``run:``, ``export:``, ``robust:``) and the ranges their numbers must lie in.

:class:`~.settings.TrainConfig` puts them together and validates them; :mod:`.config` loads them from YAML.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from typing import Any

from saferclip_diffusers.options import RangeType, float_range, int_range

SLOTS = ("text_encoder", "text_encoder_2")
DATA_FORMATS = ("unpaired", "pairs", "visu", "nsfwcaps")
EXPORT_CLASSES = ("CLIPTextModel", "CLIPTextModelWithProjection", "AutoModel")
BACKBONES = (
    "transformers",
    "open_clip",
    "transformers-mean",
)  # methods hook: transformers-mean (backbones.py)
SINGLE_FILE_FORMATS = ("comfyui", "a1111", "forge", "sdcpp", "sgm")  # when encoders.single_file is absent


def single_file_formats() -> tuple[str, ...]:
    """Single-file formats the export can write (those of ``encoders.single_file`` when that module exists)."""
    try:
        from saferclip_diffusers.encoders import single_file
    except ImportError:
        return SINGLE_FILE_FORMATS
    return tuple(getattr(single_file, "SINGLE_FILE_FORMATS", SINGLE_FILE_FORMATS))


@dataclass
class LoraSettings:
    """peft LoRA settings. Defaults follow Safe-CLIP's released trainer (r=16, alpha=1, dropout 0.1, no q_proj)."""

    r: int = 16
    alpha: float = 1.0
    dropout: float = 0.1
    text_targets: list[str] = field(default_factory=lambda: ["k_proj", "v_proj", "out_proj", "fc1", "fc2"])
    vision_targets: list[str] = field(
        default_factory=lambda: ["k_proj", "v_proj", "out_proj", "fc1", "fc2", "patch_embedding"]
    )


@dataclass
class EncoderSettings:
    """One CLIP text encoder to train, and the pipeline slot its export fills.

    ``model``: a hub id or local directory (a full ``CLIPModel``, or a text encoder with ``subfolder``), or
    ``tiny:clip`` / ``tiny:clip-g`` for the offline tiny models; with ``backbone: open_clip`` an open_clip name
    (``ViT-bigG-14`` + ``pretrained``), ``hf-hub:org/repo`` or ``local-dir:/path``. ``image_model`` names the
    image tower where ``model`` has none (e.g. SDXL's ``text_encoder_2`` + the bigG ``CLIPModel``); only used
    when images exist. ``hidden_layer`` adds loss terms on mean-pooled token states: ``last`` (what SD 1.x
    reads) or ``-2`` (``hidden_states[-2]``, what SDXL reads); ``hidden_weight`` is their weight.
    """

    slot: str = "text_encoder"
    model: str = "openai/clip-vit-large-patch14"
    backbone: str = "transformers"
    subfolder: str | None = None
    revision: str | None = None
    pretrained: str | None = None
    tokenizer: str | None = None
    tokenizer_subfolder: str | None = None
    image_model: str | None = None
    weight: float = 1.0
    hidden_layer: int | str | None = None
    hidden_weight: float = 0.0
    export_class: str | None = None
    random_weights: bool | None = None

    def is_random(self) -> bool:
        """Whether the model has random weights (the export then says so): ``random_weights``, else True
        exactly for the ``tiny:`` model scheme (an explicit spec, not a guess from a path)."""
        return self.model.startswith("tiny:") if self.random_weights is None else bool(self.random_weights)

    def resolved_export_class(self) -> str:
        if self.export_class:
            return self.export_class
        if self.backbone == "transformers-mean":  # methods hook: generic encoders export their inner model
            return "AutoModel"
        return "CLIPTextModel" if self.slot == "text_encoder" else "CLIPTextModelWithProjection"


@dataclass
class DataSettings:
    """Where the safe/unsafe captions (and optional images) come from; see :mod:`.data` for the layouts.

    ``unsafe`` / ``safe_pool`` accept ``bundled:i2p`` and ``bundled:coco`` (the packaged CSVs). Unsafe
    prompts whose text hash falls below ``unsafe_holdout`` are never trained on (left for evaluation);
    ``max_unsafe`` / ``max_safe`` then take a seeded random subset. ``val_size`` unsafe items (a count, or a
    fraction when < 1) and as many safe captions are held out for the per-epoch validation.
    """

    format: str = "unpaired"
    path: str | None = None
    image_root: str | None = None
    unsafe_image_root: str | None = None
    unsafe: str | None = "bundled:i2p"
    safe_pool: str | None = "bundled:coco"
    safe_column: str | None = None
    unsafe_column: str | None = None
    safe_image_column: str | None = None
    unsafe_image_column: str | None = None
    category_column: str | None = None
    unsafe_holdout: float = 0.0
    max_unsafe: int | None = None
    max_safe: int | None = None
    sample_seed: int = 0
    val_size: float = 0.05


@dataclass
class MiningSettings:
    """Proximity targets: each unsafe caption's nearest safe caption in the frozen text space.

    ``targets``: ``proximity`` or ``paired`` (null: the method's default; unpaired data has no partners, so
    ``paired`` falls back to the mined targets there). ``image_target``: ``paired``
    (the image of the target caption) or ``nearest`` (nearest safe image to the unsafe image, needs unsafe
    images). ``encoder``: index of the encoder whose frozen space defines the targets (shared by all encoders,
    so both SDXL encoders redirect a prompt to the same safe caption).
    """

    targets: str | None = None
    image_target: str = "paired"
    chunk_size: int = 4096
    encoder: int = 0


@dataclass
class CurriculumSettings:
    """Easy-to-hard schedule over difficulty buckets (difficulty = cosine to the target; high = easy)."""

    enabled: bool | None = None
    quantiles: list[float] = field(default_factory=lambda: [1 / 3, 2 / 3])
    stages: list[list[str]] = field(
        default_factory=lambda: [["easy"], ["easy", "medium"], ["easy", "medium", "hard"]]
    )


@dataclass
class LossSettings:
    """Term weights (merged over the method's defaults) and the InfoNCE logit scale (Safe-CLIP: exp(4.6052))."""

    weights: dict[str, float] = field(default_factory=dict)
    logit_scale: float = 100.00298144563507  # exp(4.6052), fixed as in Safe-CLIP's CLIPLoss_Positive
    relative_scale: float = 1.0  # multiplies the softplus argument; 1 = the paper's equation as written
    neighbour_scale: float = 10.0  # text-only neighbourhood preservation (losses.neighbourhood_kl); ours


@dataclass
class OptimSettings:
    """Adam(W) settings (AdamW with ``weight_decay: 0`` is Adam). ``early_stopping_patience``: stop after that
    many validated epochs without a better recall sum (Safe-CLIP's recipe: 5); null = run every epoch."""

    lr: float = 1e-4
    batch_size: int = 48
    epochs: int = 9
    grad_accum: int = 1
    weight_decay: float = 0.0
    max_grad_norm: float | None = None
    scheduler: str = "constant"
    warmup_steps: int = 0
    mixed_precision: str = "no"
    max_steps: int | None = None
    early_stopping_patience: int | None = None


@dataclass
class RunSettings:
    """Checkpointing and logging. ``stop_after_steps`` checkpoints and stops this run after that many steps
    (for time-limited jobs; continue with ``--resume latest``). ``cpu`` forces CPU even where CUDA exists."""

    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    stop_after_steps: int | None = None
    cpu: bool = False
    cache_dir: str | None = None
    encode_batch_size: int = 256


@dataclass
class ExportSettings:
    """Export of the merged encoders: dtype, whether to also write the full CLIP (``clip/``; null = only in
    two-tower mode), the base pipeline named in the model card's usage example, an optional hub push, and
    ``single_file`` formats (e.g. ``[comfyui, a1111]``) written under ``single_file/`` by
    ``saferclip_diffusers.encoders.single_file``."""

    dtype: str = "float32"
    full_clip: bool | None = None
    base_pipeline: str | None = None
    push_to_hub: str | None = None
    private: bool = True
    single_file: list[str] = field(default_factory=list)


SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine")


@dataclass(frozen=True)
class Range:
    """An allowed numeric range: the shared CLI range type (``options.RangeType``: same rules and wording),
    optionally also allowing null."""

    rule: RangeType
    nullable: bool = False

    def or_null(self) -> Range:
        return Range(self.rule, nullable=True)

    def describe(self) -> str:
        return self.rule.describe() + (" or null" if self.nullable else "")

    def ok(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.rule.kind is int and not (isinstance(value, int) or float(value).is_integer()):
            return False
        try:
            self.rule(str(int(value)) if self.rule.kind is int else repr(float(value)))
        except argparse.ArgumentTypeError:
            return False
        return True


INT0, INT1, POS = Range(int_range(0)), Range(int_range(1)), Range(float_range(0, lo_open=True))
NONNEG, UNIT_OPEN = Range(float_range(0)), Range(float_range(0, 1, hi_open=True))


@dataclass
class RobustSettings:
    """``attack``: ``embedding`` (soft tokens, signed gradient in an l2 ball) or ``token`` (discrete prefix ids,
    GCG-style: per step, single-token swaps drawn from each position's ``top_k`` gradient ids, ``candidates`` per
    caption, the best kept if it lowers ``A``). ``every``: attack every that many optimiser steps after
    ``warmup`` (a fraction of all steps when < 1, else a step count). ``w_hidden`` null: 1 when the encoder has
    a ``hidden_layer``, else 0. ``preserve``: weight of ``d(T(r + t), T0(t))`` on the batch's safe captions ``t``
    with ``tokens`` random vocabulary tokens ``r`` in front (a prefix must not move a safe caption either).
    ``space``: where the inner attack and the outer term act: ``pooled`` (projected ``text_embeds`` + pooled
    states from the frozen cache) or ``states`` (every token state the UNet reads plus the pooled vector,
    swap-gcg's objective, against a reference forward of the original encoder; see ``training/robust_states``).
    ``layer`` (states only): the states the UNet reads, ``final`` (SD 1.x/2.x) or ``penultimate`` (SDXL);
    ``auto`` = penultimate when the config trains ``text_encoder_2``."""

    enabled: bool = False
    attack: str = "embedding"
    space: str = "pooled"
    layer: str = "auto"
    every: int = 4
    warmup: float = 0.2
    tokens: int = 3
    steps: int = 10
    step_size: float = 0.1
    radius: float = 0.5
    fraction: float = 0.5
    weight: float = 0.5
    hidden_weight: float = 1.0
    w_redir: float = 1.0
    w_rel: float = 1.0
    w_hidden: float | None = None
    candidates: int = 16
    top_k: int = 32
    preserve: float = 0.0

    def validate(self) -> None:
        checks = [
            (
                self.attack in ("embedding", "token"),
                f"robust.attack must be embedding|token, got {self.attack!r}",
            ),
            (self.space in ("pooled", "states"), f"robust.space must be pooled|states, got {self.space!r}"),
            (
                self.layer in ("auto", "final", "penultimate"),
                f"robust.layer must be auto|final|penultimate, got {self.layer!r}",
            ),
            (self.candidates >= 1 and self.top_k >= 1, "robust.candidates and robust.top_k must be >= 1"),
            (self.every >= 1, "robust.every must be >= 1"),
            (self.warmup >= 0, "robust.warmup must be >= 0"),
            (1 <= self.tokens <= 16, "robust.tokens must be in [1, 16]"),
            (self.steps >= 1, "robust.steps must be >= 1"),
            (self.step_size > 0 and self.radius > 0, "robust.step_size and robust.radius must be > 0"),
            (0 < self.fraction <= 1, "robust.fraction must be in (0, 1]"),
            (self.weight >= 0, "robust.weight must be >= 0"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)

    def warmup_steps(self, total_steps: int) -> int:
        return int(math.ceil(self.warmup * total_steps)) if self.warmup < 1 else int(self.warmup)

    def active(self, step: int, total_steps: int) -> bool:
        start = self.warmup_steps(total_steps)
        return self.enabled and step >= start and (step - start) % self.every == 0
