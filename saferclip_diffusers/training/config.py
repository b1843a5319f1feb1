"""Training configuration: typed dataclasses loaded from YAML (a shipped preset or a file) plus overrides.

``load_config("tiny")`` reads ``saferclip_diffusers/training/configs/tiny.yaml``; ``load_config("my.yaml")``
reads a file. A YAML file may start from another one with ``extends: NAME_OR_PATH`` (deep merge). Overrides
are dotted ``key=value`` strings whose values are parsed as YAML: ``optim.lr=3e-4``, ``method=safeclip``,
``encoders.0.model=openai/clip-vit-large-patch14``. Unknown keys are errors, so a typo never goes unnoticed.

Method defaults (applied where the config leaves a value unset, ``null``):

===================  ======================================  ======================================
setting              ``method: saferclip``                   ``method: safeclip`` (baseline)
===================  ======================================  ======================================
``mining.targets``   ``proximity`` (nearest safe caption)    ``paired`` (the data set's partner)
``curriculum``       on (easy -> easy+medium -> all)         off
``loss.weights``     see :data:`losses.SAFERCLIP_WEIGHTS`    see :data:`losses.SAFECLIP_WEIGHTS`
===================  ======================================  ======================================
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .method_settings import DesSettings, UwmSettings  # methods hook: UWM/DES settings sections

CONFIG_DIR = Path(__file__).parent / "configs"
METHODS = ("saferclip", "safeclip", "uwm", "des")
SLOTS = ("text_encoder", "text_encoder_2")
DATA_FORMATS = ("unpaired", "pairs", "visu", "nsfwcaps")
EXPORT_CLASSES = ("CLIPTextModel", "CLIPTextModelWithProjection", "AutoModel")
BACKBONES = ("transformers", "open_clip", "transformers-mean")


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
    stages: list[list[str]] = field(default_factory=lambda: [["easy"], ["easy", "medium"], ["easy", "medium", "hard"]])


@dataclass
class LossSettings:
    """Term weights (merged over the method's defaults) and the InfoNCE logit scale (Safe-CLIP: exp(4.6052))."""

    weights: dict[str, float] = field(default_factory=dict)
    logit_scale: float = 100.00298144563507  # exp(4.6052), fixed as in Safe-CLIP's CLIPLoss_Positive
    relative_scale: float = 1.0  # multiplies the softplus argument; 1 = the paper's equation as written


@dataclass
class OptimSettings:
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
    two-tower mode), the base pipeline named in the model card's usage example, and an optional hub push."""

    dtype: str = "float32"
    full_clip: bool | None = None
    base_pipeline: str | None = None
    push_to_hub: str | None = None
    private: bool = True


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
    uwm: UwmSettings = field(default_factory=UwmSettings)
    des: DesSettings = field(default_factory=DesSettings)

    # ------------------------------------------------------------------ derived settings
    @property
    def targets(self) -> str:
        return self.mining.targets or ("proximity" if self.method == "saferclip" else "paired")

    @property
    def curriculum_enabled(self) -> bool:
        if self.curriculum.enabled is None:
            return self.method == "saferclip"
        return bool(self.curriculum.enabled)

    def loss_weights(self) -> dict[str, float]:
        from .losses import default_weights

        if self.method in ("uwm", "des"):  # methods hook: their terms are fixed by their own settings
            return {}
        weights = default_weights(self.method)
        unknown = set(self.loss.weights) - set(weights)
        if unknown:
            raise ValueError(
                f"loss.weights has unknown term(s) {sorted(unknown)} for method {self.method!r}; "
                f"known terms: {sorted(weights)}"
            )
        weights.update({k: float(v) for k, v in self.loss.weights.items()})
        return weights

    def validate(self) -> TrainConfig:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(f"config {self.name!r}: {message}")

        need(self.method in METHODS, f"method must be one of {METHODS}, got {self.method!r}")
        need(self.finetune in ("lora", "full"), f"finetune must be 'lora' or 'full', got {self.finetune!r}")
        need(len(self.encoders) >= 1, "encoders must list at least one encoder")
        slots = [e.slot for e in self.encoders]
        need(len(set(slots)) == len(slots), f"each encoder needs its own slot, got {slots}")
        for e in self.encoders:
            need(e.slot in SLOTS, f"encoder slot must be one of {SLOTS}, got {e.slot!r}")
            need(e.backbone in BACKBONES, f"backbone must be one of {BACKBONES}, got {e.backbone!r}")
            need(e.resolved_export_class() in EXPORT_CLASSES, f"export_class must be one of {EXPORT_CLASSES}")
            need(
                e.hidden_layer is None or e.hidden_layer == "last" or isinstance(e.hidden_layer, int),
                f"hidden_layer must be null, 'last' or an int (e.g. -2), got {e.hidden_layer!r}",
            )
            need(not (e.hidden_weight and e.hidden_layer is None),
                 f"encoder {e.slot}: hidden_weight needs hidden_layer ('last' for SD 1.x, -2 for SDXL)")
        need(0 <= self.mining.encoder < len(self.encoders), "mining.encoder must index an encoder")
        need(self.targets in ("proximity", "paired"), f"mining.targets must be proximity|paired, got {self.targets!r}")
        need(self.mining.image_target in ("paired", "nearest"), "mining.image_target must be paired|nearest")
        need(self.mining.chunk_size > 0, "mining.chunk_size must be positive")
        need(self.data.format in DATA_FORMATS, f"data.format must be one of {DATA_FORMATS}, got {self.data.format!r}")
        need(0 <= self.data.unsafe_holdout < 1, "data.unsafe_holdout must be in [0, 1)")
        q = list(self.curriculum.quantiles)
        need(all(0 < a < 1 for a in q) and q == sorted(q), "curriculum.quantiles must be increasing values in (0, 1)")
        need(len(self.curriculum.stages) >= 1, "curriculum.stages must list at least one stage")
        need(self.optim.batch_size >= 1 and self.optim.grad_accum >= 1 and self.optim.epochs >= 1,
             "optim.batch_size, optim.grad_accum and optim.epochs must be >= 1")
        need(self.optim.mixed_precision in ("no", "fp16", "bf16"), "optim.mixed_precision must be no|fp16|bf16")
        need(self.export.dtype in ("float32", "float16", "bfloat16"), "export.dtype must be float32|float16|bfloat16")
        need(self.run.checkpoint_every >= 1 and self.run.keep_checkpoints >= 1,
             "run.checkpoint_every and run.keep_checkpoints must be >= 1")
        self.loss_weights()  # raises on unknown terms
        need(self.uwm.rule in ("mass", "count"), f"uwm.rule must be mass|count, got {self.uwm.rule!r}")
        need(0 < self.uwm.tau < 1, f"uwm.tau must be in (0, 1), got {self.uwm.tau}")
        need(self.uwm.calibration_size >= 1 and self.uwm.batch_size >= 1, "uwm.calibration_size and uwm.batch_size must be >= 1")
        need(bool(self.uwm.layers), "uwm.layers must name at least one nn.Linear (CLIP: out_proj)")
        need(0 <= self.des.lambda_safe <= 1, f"des.lambda_safe must be in [0, 1], got {self.des.lambda_safe}")
        need(bool(self.des.concept_prompt.strip()), "des.concept_prompt must not be empty")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ---------------------------------------------------------------------------------------- loading


def shipped_configs() -> list[str]:
    """Names of the configs shipped inside the package (usable as ``--config NAME``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _resolve_path(name_or_path: str | Path, relative_to: Path | None = None) -> Path:
    text = str(name_or_path)
    candidates = [Path(text)]
    if relative_to is not None:
        candidates.insert(0, relative_to / text)
    for candidate in candidates:
        if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
            return candidate
    shipped = CONFIG_DIR / f"{text}.yaml"
    if shipped.is_file():
        return shipped
    raise FileNotFoundError(
        f"no training config {text!r}: give a YAML file path or one of the shipped names: {', '.join(shipped_configs())}"
    )


def _deep_merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    if path.resolve() in seen:
        raise ValueError(f"config {path} extends itself (cycle: {' -> '.join(map(str, seen))})")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"config {path} must be a YAML mapping, got {type(data).__name__}")
    parent = data.pop("extends", None)
    if parent:
        base = _read_yaml(_resolve_path(parent, path.parent), seen + (path.resolve(),))
        data = _deep_merge(base, data)
    return data


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    """Apply ``a.b=value`` overrides (values parsed as YAML; list items addressed by index)."""
    data = copy.deepcopy(data)
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw.strip() else None
        parts = key.strip().split(".")
        node: Any = data
        for i, part in enumerate(parts[:-1]):
            if isinstance(node, list):
                node = node[int(part)]
            else:
                if part == "encoders" and "encoders" not in node:
                    node["encoders"] = [dataclasses.asdict(EncoderSettings())]
                node = node.setdefault(part, {})
            if not isinstance(node, (dict, list)):
                raise ValueError(f"override {item!r}: {'.'.join(parts[: i + 1])} is not a section")
        last = parts[-1]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return data


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Numbers written like ``1e-4`` are strings to YAML 1.1: convert them where the field is numeric."""
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None or not isinstance(value, str) or str in args:
        return value
    for kind in (int, float):
        if kind in args:
            try:
                return kind(value) if kind is float else int(value)
            except ValueError:
                continue
    if any(a in (int, float) for a in args):
        raise ValueError(f"config key {where}: expected a number, got {value!r}")
    return value


def _build(cls, data: Any, where: str):
    if not dataclasses.is_dataclass(cls):
        return data
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ValueError(f"config section {where or 'root'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown config key(s) {sorted(unknown)} in {where or 'root'}; known: {sorted(known)}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        sub = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, sub)
        elif name == "encoders":
            if not isinstance(value, list):
                raise ValueError("config key 'encoders' must be a list of encoder mappings")
            kwargs[name] = [_build(EncoderSettings, v, f"encoders.{i}") for i, v in enumerate(value)]
        else:
            kwargs[name] = _coerce(value, hint, sub)
    return cls(**kwargs)


def config_from_dict(data: dict) -> TrainConfig:
    return _build(TrainConfig, data, "").validate()


def load_config(name_or_path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Load a shipped config by name or a YAML file, apply dotted overrides and validate."""
    data = _read_yaml(_resolve_path(name_or_path))
    return config_from_dict(apply_overrides(data, overrides))
