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

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import yaml

from .method_settings import DesSettings, UwmSettings  # methods hook: UWM/DES settings sections
from .methods import METHODS, get_method
from .sections import (  # noqa: F401  (re-exported: settings is the public home of the config types)
    BACKBONES,
    DATA_FORMATS,
    EXPORT_CLASSES,
    INT0,
    INT1,
    NONNEG,
    POS,
    SCHEDULERS,
    SINGLE_FILE_FORMATS,
    SLOTS,
    UNIT_OPEN,
    CurriculumSettings,
    DataSettings,
    EncoderSettings,
    ExportSettings,
    LoraSettings,
    LossSettings,
    MiningSettings,
    OptimSettings,
    Range,
    RobustSettings,
    RunSettings,
    single_file_formats,
)


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
