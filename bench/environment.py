"""What a benchmark ran on: machine (CPU model, cores, RAM, load), device, library versions, git commit."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

PACKAGES = (
    "torch",
    "diffusers",
    "transformers",
    "accelerate",
    "safetensors",
    "peft",
    "nudenet",
    "onnxruntime",
    "xformers",
    "numpy",
)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_supports_bf16() -> bool:
    """Whether the CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX-BF16), where bf16 runs fast."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return False
    flags = next(
        (line for line in cpuinfo.read_text(errors="replace").splitlines() if line.startswith("flags")), ""
    )
    return bool({"avx512_bf16", "amx_bf16"} & set(flags.split()))


def total_ram_gb() -> float | None:
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    try:
        import psutil

        return round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        return None


def available_ram_gb() -> float | None:
    """RAM available to a new process now (``MemAvailable``), in GB."""
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return round(int(line.split()[1]) / 2**20, 1)
    try:
        import psutil

        return round(psutil.virtual_memory().available / 2**30, 1)
    except ImportError:
        return None


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (other processes competing for the cores), where the OS reports them."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit(cwd: str | os.PathLike | None = None) -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=cwd or Path(__file__).resolve().parent,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def device_info(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"device": device, "torch_threads": torch.get_num_threads()}
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for, but torch sees no CUDA device; use --device cpu")
        props = torch.cuda.get_device_properties(torch.device(device))
        info.update(
            gpu=props.name,
            gpu_memory_gb=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
    return info


def environment(device: str) -> dict[str, Any]:
    """Everything a reader needs to place a figure: machine, device, versions, commit, time and load."""
    return {
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "ram_gb": total_ram_gb(),
            "os": f"{platform.system()} {platform.release()}",
            "load_average": load_average(),
        },
        **device_info(device),
        "versions": versions(),
        "git_commit": git_commit(),
    }


def describe(env: dict[str, Any]) -> str:
    """One line naming machine, device and main versions, for the markdown report."""
    m, v = env["machine"], env["versions"]
    dev = env["device"] if "gpu" not in env else f"{env['device']} ({env['gpu']}, {env['gpu_memory_gb']} GB)"
    load = "" if not m.get("load_average") else f", load average {m['load_average'][0]} at start"
    return (
        f"{m['cpu']}, {m['cores']} cores, {m['ram_gb']} GB RAM ({m['os']}{load}); device {dev}, "
        f"{env['torch_threads']} torch threads; torch {v['torch']}, diffusers {v['diffusers']}, "
        f"transformers {v['transformers']}"
    )
