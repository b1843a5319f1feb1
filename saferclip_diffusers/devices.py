"""Device and dtype names: what ``auto``, ``cuda:1`` or ``bf16`` mean in every command and function."""

from __future__ import annotations

import torch

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}
DTYPE_CHOICES = ("auto", "float32", "float16", "bfloat16")


def parse_dtype(value: str | torch.dtype | None) -> torch.dtype | None:
    """A torch dtype from its name; ``None`` or ``"auto"`` give ``None`` (decided later by the device)."""
    if value is None or isinstance(value, torch.dtype):
        return value
    name = str(value).strip().lower().removeprefix("torch.")
    if name == "auto":
        return None
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {value!r}; choose one of {', '.join(DTYPE_CHOICES)}")
    return DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or None): CUDA, else MPS, else CPU. An explicit device that this machine lacks is an error."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {device!r} asked for, but this machine has no CUDA device; use --device cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {device!r} does not exist: this machine has {torch.cuda.device_count()} CUDA devices"
            )
    if dev.type == "mps" and not _mps_available():
        raise ValueError(f"device {device!r} asked for, but MPS is not available here; use --device cpu")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: str | torch.device) -> torch.dtype:
    """``auto`` (or None): float16 on CUDA, float32 elsewhere; otherwise the named dtype."""
    parsed = parse_dtype(dtype)
    if parsed is not None:
        return parsed
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32
