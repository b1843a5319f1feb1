"""Shared test set-up: offline, tiny models cached once per session (or in $SAFERCLIP_TINY_CACHE)."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# Tiny models gain nothing from intra-op threads and lose much to OpenMP spin-waits on a shared 2-core machine;
# subprocesses (CLI tests) inherit this too. Set OMP_NUM_THREADS yourself to override.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault(
    "SAFERCLIP_TINY_CACHE", os.path.join(tempfile.gettempdir(), "saferclip-tiny-test-cache")
)

import pytest  # noqa: E402

import saferclip_diffusers  # noqa: E402,F401  - applies the CPU torchvision workaround before transformers
from saferclip_diffusers.tiny import tiny_model_dir  # noqa: E402


@pytest.fixture(scope="session")
def tiny_sd_dir():
    return tiny_model_dir("sd")


@pytest.fixture(scope="session")
def tiny_sdxl_dir():
    return tiny_model_dir("sdxl")


@pytest.fixture(scope="session")
def safe_sd_dir():
    return tiny_model_dir("safe-sd")


@pytest.fixture(scope="session")
def safe_sdxl_dir():
    return tiny_model_dir("safe-sdxl")
