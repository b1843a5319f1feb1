"""Training configuration: YAML (a shipped name or a file) plus ``key=value`` overrides -> :class:`TrainConfig`.

``load_config("tiny")`` reads ``saferclip_diffusers/training/configs/tiny.yaml``; ``load_config("my.yaml")``
reads a file. A YAML file may start from another one with ``extends: NAME_OR_PATH`` (deep merge). Overrides
are dotted ``key=value`` strings whose values are parsed as YAML: ``optim.lr=3e-4``, ``method=safeclip``,
``encoders.0.model=openai/clip-vit-large-patch14``. Unknown keys, bad indices and out-of-range numbers are
errors that name the key, so a typo never goes unnoticed. The sections are defined in :mod:`.settings`.

:func:`config_changes` compares two configs for ``--resume``: only :data:`RESUMABLE` keys may change.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from .settings import (  # noqa: F401  (re-exported: the public home of the config types)
    SLOTS,
    CurriculumSettings,
    DataSettings,
    EncoderSettings,
    ExportSettings,
    LoraSettings,
    LossSettings,
    MiningSettings,
    OptimSettings,
    RunSettings,
    TrainConfig,
)

CONFIG_DIR = Path(__file__).parent / "configs"

#: Keys that may change when a run is resumed (prefixes end with "."): the length of the run and how it is
#: logged, checkpointed and exported. Anything else changes what is trained and is refused.
RESUMABLE = ("name", "optim.epochs", "optim.max_steps", "optim.early_stopping_patience", "run.", "export.")


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


def _index(node: list, part: str, item: str, path: str) -> int:
    try:
        i = int(part)
    except ValueError:
        raise ValueError(
            f"override {item!r}: {path} is a list; address its items by number (0, 1, ...)"
        ) from None
    if not 0 <= i < len(node):
        valid = f"0..{len(node) - 1}" if node else "none: the list is empty"
        raise ValueError(
            f"override {item!r}: {path} has {len(node)} item(s) (indices {valid}); "
            "to add an item, write the whole list in a YAML config"
        )
    return i


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    """Apply ``a.b=value`` overrides (values parsed as YAML; list items addressed by index)."""
    data = copy.deepcopy(data)
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            raise ValueError(f"override {item!r}: the value is not valid YAML ({err.problem})") from None
        parts = key.strip().split(".")
        if not all(parts):
            raise ValueError(f"override {item!r}: empty key part in {key!r}")
        node: Any = data
        for i, part in enumerate(parts[:-1]):
            where = ".".join(parts[: i + 1])
            if isinstance(node, list):
                node = node[_index(node, part, item, ".".join(parts[:i]))]
            else:
                if part == "encoders" and "encoders" not in node:
                    node["encoders"] = [dataclasses.asdict(EncoderSettings())]
                node = node.setdefault(part, {})
            if not isinstance(node, (dict, list)):
                raise ValueError(f"override {item!r}: {where} is a value, not a section")
        last = parts[-1]
        if isinstance(node, list):
            node[_index(node, last, item, ".".join(parts[:-1]))] = value
        else:
            node[last] = value
    return data


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Numbers written like ``1e-4`` are strings to YAML 1.1: convert them where the field is numeric."""
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"config key {where}: expected a finite number, got {value!r}")
    if isinstance(value, bool) and args == (str,):  # YAML 1.1 reads a bare no/yes as a boolean
        return "yes" if value else "no"
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
        raise ValueError(
            f"unknown config key(s) {sorted(unknown)} in {where or 'root'}; known: {sorted(known)}"
        )
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


# ---------------------------------------------------------------------------------------- resume


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out or {prefix.rstrip("."): {}}
    if isinstance(obj, list) and obj and all(isinstance(x, dict) for x in obj):
        out = {}
        for i, v in enumerate(obj):
            out.update(_flatten(v, f"{prefix}{i}."))
        return out
    return {prefix.rstrip("."): obj}


def config_changes(old: dict, new: dict) -> dict[str, tuple[Any, Any]]:
    """``{key: (old value, new value)}`` for every setting that differs between two config dicts."""
    a, b = _flatten(old), _flatten(new)
    missing = object()
    changes = {}
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key, missing), b.get(key, missing)
        if x != y:
            changes[key] = (None if x is missing else x, None if y is missing else y)
    return changes


def is_resumable(key: str) -> bool:
    return any(key == r or (r.endswith(".") and key.startswith(r)) for r in RESUMABLE)
