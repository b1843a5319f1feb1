"""Training settings: the typed sections of a training config and their validation (ranges named in errors).

Loading from YAML and ``key=value`` overrides live in :mod:`.config`. Method defaults (applied where the config leaves a value unset, ``null``):

===================  ======================================  ======================================
setting              ``method: saferclip``                   ``method: safeclip`` (baseline)
===================  ======================================  ======================================
``mining.targets``   ``proximity`` (nearest safe caption)    ``paired`` (the data set's partner)
``curriculum``       on (easy -> easy+medium -> all)         off
``loss.weights``     see :data:`losses.SAFERCLIP_WEIGHTS`    see :data:`losses.SAFECLIP_WEIGHTS`
===================  ======================================  ======================================
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import yaml

from saferclip_diffusers.options import RangeType, float_range, int_range

from .method_settings import DesSettings, UwmSettings  # methods hook: UWM/DES settings sections
from .methods import METHODS, get_method

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
    with ``tokens`` random vocabulary tokens ``r`` in front (a prefix must not move a safe caption either)."""

    enabled: bool = False
    attack: str = "embedding"
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


@dataclass
class TrainConfig:
    name: str = "custom"
    method: str = "saferclip"
    seed: int = 0
    finetune: str = "lora"
    train_vision: bool = False
    allow_pickle: bool = False
    encoders: list[EncoderSettings] = field(default_factory=lambda: [EncoderSettings()])
    lora: LoraSettings = field(default_factory=LoraSettings)
    data: DataSettings = field(default_factory=DataSettings)
    mining: MiningSettings = field(default_factory=MiningSettings)
    curriculum: CurriculumSettings = field(default_factory=CurriculumSettings)
    loss: LossSettings = field(default_factory=LossSettings)
    optim: OptimSettings = field(default_factory=OptimSettings)
    run: RunSettings = field(default_factory=RunSettings)
    export: ExportSettings = field(default_factory=ExportSettings)
    robust: RobustSettings = field(
        default_factory=RobustSettings
    )  # adversarial training (training/robust.py)
    uwm: UwmSettings = field(default_factory=UwmSettings)
    des: DesSettings = field(default_factory=DesSettings)

    # ------------------------------------------------------------------ derived settings
    @property
    def targets(self) -> str:
        return self.mining.targets or get_method(self.method).default_targets

    @property
    def curriculum_enabled(self) -> bool:
        if self.curriculum.enabled is None:
            return get_method(self.method).default_curriculum
        return bool(self.curriculum.enabled)

    def loss_weights(self) -> dict[str, float]:
        weights = get_method(self.method).default_weights()
        unknown = set(self.loss.weights) - set(weights)
        if unknown:
            raise ValueError(
                f"loss.weights has unknown term(s) {sorted(unknown)} for method {self.method!r}; "
                f"known terms: {sorted(weights)}"
            )
        weights.update({k: float(v) for k, v in self.loss.weights.items()})
        return weights

    def validate(self) -> TrainConfig:
        """Check every setting; a ValueError names the key, its allowed values or range, and the bad value."""

        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(f"config {self.name!r}: {message}")

        need(self.method in METHODS, f"method must be one of {tuple(METHODS)}, got {self.method!r}")
        need(self.finetune in ("lora", "full"), f"finetune must be 'lora' or 'full', got {self.finetune!r}")
        need(len(self.encoders) >= 1, "encoders must list at least one encoder")
        slots = [e.slot for e in self.encoders]
        need(len(set(slots)) == len(slots), f"each encoder needs its own slot, got {slots}")
        for i, e in enumerate(self.encoders):
            need(e.slot in SLOTS, f"encoders.{i}.slot must be one of {SLOTS}, got {e.slot!r}")
            need(
                e.backbone in BACKBONES,
                f"encoders.{i}.backbone must be one of {BACKBONES}, got {e.backbone!r}",
            )
            need(
                isinstance(e.model, str) and bool(e.model),
                f"encoders.{i}.model must name a model, got {e.model!r}",
            )
            need(
                e.resolved_export_class() in EXPORT_CLASSES,
                f"encoders.{i}.export_class must be one of {EXPORT_CLASSES}",
            )
            need(
                e.hidden_layer is None
                or e.hidden_layer == "last"
                or (isinstance(e.hidden_layer, int) and not isinstance(e.hidden_layer, bool)),
                f"encoders.{i}.hidden_layer must be null, 'last' or an int (e.g. -2), got {e.hidden_layer!r}",
            )
            need(
                not (e.hidden_weight and e.hidden_layer is None),
                f"encoders.{i} ({e.slot}): hidden_weight needs hidden_layer ('last' for SD 1.x, -2 for SDXL)",
            )
        need(
            self.mining.encoder < len(self.encoders),
            f"mining.encoder must index an encoder: an integer in [0, {len(self.encoders) - 1}], got {self.mining.encoder}",
        )
        need(
            self.targets in ("proximity", "paired"),
            f"mining.targets must be proximity|paired, got {self.targets!r}",
        )
        need(self.mining.image_target in ("paired", "nearest"), "mining.image_target must be paired|nearest")
        need(
            self.data.format in DATA_FORMATS,
            f"data.format must be one of {DATA_FORMATS}, got {self.data.format!r}",
        )
        q = list(self.curriculum.quantiles)
        need(
            all(isinstance(a, (int, float)) and 0 < a < 1 for a in q) and q == sorted(q),
            f"curriculum.quantiles must be increasing numbers in (0, 1), got {q}",
        )
        need(len(self.curriculum.stages) >= 1, "curriculum.stages must list at least one stage")
        need(
            self.optim.mixed_precision in ("no", "fp16", "bf16"), "optim.mixed_precision must be no|fp16|bf16"
        )
        need(
            self.optim.scheduler in SCHEDULERS,
            f"optim.scheduler must be one of {SCHEDULERS}, got {self.optim.scheduler!r}",
        )
        need(
            self.export.dtype in ("float32", "float16", "bfloat16"),
            "export.dtype must be float32|float16|bfloat16",
        )
        formats = single_file_formats()
        sf = self.export.single_file
        need(
            isinstance(sf, list) and all(f in formats for f in sf) and len(set(sf)) == len(sf),
            f"export.single_file must be a list of distinct formats from {formats}, got {sf!r}",
        )
        for key, value, rule in self._ranges():
            need(rule.ok(value), f"{key} must be {rule.describe()}, got {value!r}")
        try:
            self.robust.validate()
        except ValueError as err:
            raise ValueError(f"config {self.name!r}: {err}") from None
        self.loss_weights()  # raises on unknown terms
        need(self.uwm.rule in ("mass", "count"), f"uwm.rule must be mass|count, got {self.uwm.rule!r}")
        need(0 < self.uwm.tau < 1, f"uwm.tau must be in (0, 1), got {self.uwm.tau}")
        need(
            self.uwm.calibration_size >= 1 and self.uwm.batch_size >= 1,
            "uwm.calibration_size and uwm.batch_size must be >= 1",
        )
        need(bool(self.uwm.layers), "uwm.layers must name at least one nn.Linear (CLIP: out_proj)")
        need(0 <= self.des.lambda_safe <= 1, f"des.lambda_safe must be in [0, 1], got {self.des.lambda_safe}")
        need(bool(self.des.concept_prompt.strip()), "des.concept_prompt must not be empty")
        return self

    def _ranges(self):
        """``(key, value, Range)`` for every numeric setting."""
        o, r, d = self.optim, self.run, self.data
        rows = [
            ("seed", self.seed, INT0),
            ("lora.r", self.lora.r, INT1),
            ("lora.alpha", self.lora.alpha, POS),
            ("lora.dropout", self.lora.dropout, UNIT_OPEN),
            ("data.unsafe_holdout", d.unsafe_holdout, UNIT_OPEN),
            ("data.max_unsafe", d.max_unsafe, INT1.or_null()),
            ("data.max_safe", d.max_safe, INT1.or_null()),
            ("data.sample_seed", d.sample_seed, INT0),
            ("data.val_size", d.val_size, NONNEG),
            ("mining.chunk_size", self.mining.chunk_size, INT1),
            ("mining.encoder", self.mining.encoder, INT0),
            ("loss.logit_scale", self.loss.logit_scale, POS),
            ("loss.relative_scale", self.loss.relative_scale, POS),
            ("loss.neighbour_scale", self.loss.neighbour_scale, POS),
            ("optim.lr", o.lr, POS),
            ("optim.batch_size", o.batch_size, INT1),
            ("optim.epochs", o.epochs, INT1),
            ("optim.grad_accum", o.grad_accum, INT1),
            ("optim.weight_decay", o.weight_decay, NONNEG),
            ("optim.max_grad_norm", o.max_grad_norm, POS.or_null()),
            ("optim.warmup_steps", o.warmup_steps, INT0),
            ("optim.max_steps", o.max_steps, INT1.or_null()),
            ("optim.early_stopping_patience", o.early_stopping_patience, INT1.or_null()),
            ("run.checkpoint_every", r.checkpoint_every, INT1),
            ("run.keep_checkpoints", r.keep_checkpoints, INT1),
            ("run.log_every", r.log_every, INT1),
            ("run.stop_after_steps", r.stop_after_steps, INT1.or_null()),
            ("run.encode_batch_size", r.encode_batch_size, INT1),
        ]
        if d.val_size >= 1:
            rows.append(("data.val_size", d.val_size, INT1))  # a count when >= 1
        for i, e in enumerate(self.encoders):
            rows += [
                (f"encoders.{i}.weight", e.weight, NONNEG),
                (f"encoders.{i}.hidden_weight", e.hidden_weight, NONNEG),
            ]
        rows += [(f"loss.weights.{k}", v, NONNEG) for k, v in self.loss.weights.items()]
        return rows

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)
