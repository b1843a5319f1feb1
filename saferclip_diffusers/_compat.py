"""Host workarounds, applied once on ``import saferclip_diffusers``.

CPU-only torch + CUDA-linked torchvision
    PyPI's torchvision wheels are CUDA builds. Beside a CPU build of torch, torchvision's ``_C`` extension
    fails to load (quietly), and ``torchvision/_meta_registrations.py`` then registers a fake kernel for
    ``torchvision::nms``, an operator that was never defined: ``import torchvision`` raises
    ``RuntimeError: operator torchvision::nms does not exist``. transformers imports torchvision whenever it
    is installed, so ``from transformers import CLIPTextModel`` and ``import open_clip`` break too.
    Defining the two operator schemas before the first torchvision import lets everything import; only
    torchvision's C++ ops (nms, roi_align, ...) stay unavailable, and nothing in this stack calls them.
    On a host whose torchvision matches its torch, :func:`patch_cpu_torchvision` does nothing.

onnxruntime telemetry
    NudeNet runs on onnxruntime, whose builds can send usage telemetry from the native library. The documented
    environment opt-outs must be set before the runtime initialises; :func:`disable_telemetry` sets them (unless
    the user set them) on ``import saferclip_diffusers``, before anything can load onnxruntime.

xformers
    Optional, CUDA only: :func:`configure_attention` enables it when CUDA and xformers are both present
    and otherwise leaves diffusers' default PyTorch SDPA attention in place.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import sys
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

# Kept alive for the life of the process: a torch.library.Library deregisters its ops when collected.
_TORCHVISION_SHIM: torch.library.Library | None = None


def _torchvision_cuda_build() -> bool:
    """True when the installed torchvision wheel is a CUDA build (read from its version file, no import)."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return False
    version_file = Path(spec.origin).parent / "version.py"
    if not version_file.is_file():
        return False
    match = re.search(r"__version__\s*=\s*['\"]([^'\"]+)['\"]", version_file.read_text())
    return bool(match and re.search(r"\+cu\d+", match.group(1)))


def needs_torchvision_patch() -> bool:
    """Whether this host has a CPU torch beside a CUDA-linked torchvision that is not imported yet."""
    if "torchvision" in sys.modules:
        return False
    return torch.version.cuda is None and _torchvision_cuda_build()


def patch_cpu_torchvision() -> bool:
    """Define ``torchvision::nms`` and ``torchvision::qnms`` schemas when (and only when) they are needed.

    Returns True when the workaround was applied.
    """
    global _TORCHVISION_SHIM
    if _TORCHVISION_SHIM is not None or not needs_torchvision_patch():
        return False
    lib = torch.library.Library("torchvision", "DEF")  # noqa: TOR901 - schema-only shim
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
    _TORCHVISION_SHIM = lib
    logger.debug("CPU torch with a CUDA torchvision wheel: defined torchvision::nms/qnms schemas.")
    return True


TELEMETRY_OPT_OUTS = {"ORT_DISABLE_TELEMETRY": "1", "ORT_TELEMETRY_DISABLED": "1"}


def disable_telemetry() -> None:
    """Set onnxruntime's telemetry opt-outs in the environment (before it loads); user values win."""
    for name, value in TELEMETRY_OPT_OUTS.items():
        os.environ.setdefault(name, value)


def apply() -> None:
    """Every host workaround, once: called by ``saferclip_diffusers/__init__.py``."""
    disable_telemetry()
    patch_cpu_torchvision()


def xformers_available() -> bool:
    return torch.cuda.is_available() and importlib.util.find_spec("xformers") is not None


def configure_attention(pipe, use_xformers: bool | None = None) -> str:
    """Pick the attention implementation of a diffusers pipeline.

    ``use_xformers=None`` (auto) enables xformers only when CUDA and xformers are both present;
    ``True`` demands it (and fails loudly where it is missing); ``False`` keeps PyTorch SDPA.
    Returns the name of the backend in use: ``"xformers"`` or ``"sdpa"``.
    """
    if use_xformers is None:
        use_xformers = xformers_available()
    if use_xformers:
        if not xformers_available():
            raise RuntimeError(
                "use_xformers=True needs a CUDA device and the xformers package "
                "(pip install 'saferclip-diffusers[xformers]'); pass use_xformers=None to pick automatically."
            )
        pipe.enable_xformers_memory_efficient_attention()
        return "xformers"
    return "sdpa"
