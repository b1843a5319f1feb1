"""The host workarounds: CPU torch + CUDA torchvision shim, attention selection."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from saferclip_diffusers import _compat


def test_clip_classes_and_open_clip_import_after_the_package():
    code = (
        "import saferclip_diffusers, torchvision, open_clip\n"
        "from transformers import CLIPTextModel\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")


def test_shim_does_nothing_on_a_matching_host(monkeypatch):
    monkeypatch.setattr(_compat, "_torchvision_cuda_build", lambda: False)
    monkeypatch.delitem(sys.modules, "torchvision", raising=False)
    assert not _compat.needs_torchvision_patch()


def test_shim_not_needed_once_torchvision_is_imported(monkeypatch):
    monkeypatch.setattr(_compat, "_torchvision_cuda_build", lambda: True)
    monkeypatch.setitem(sys.modules, "torchvision", object())
    assert not _compat.needs_torchvision_patch()


def test_shim_is_needed_only_for_cpu_torch_beside_a_cuda_torchvision_wheel(monkeypatch, tmp_path):
    """The positive case the two tests above cannot see: the version file of the wheel decides."""
    package = tmp_path / "torchvision"
    package.mkdir()
    (package / "__init__.py").write_text("")
    spec = importlib.util.spec_from_file_location("torchvision", package / "__init__.py")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: spec if name == "torchvision" else None)
    monkeypatch.delitem(sys.modules, "torchvision", raising=False)
    monkeypatch.setattr(torch.version, "cuda", None)
    for version, cuda_wheel in (("0.21.0+cu124", True), ("0.21.0+cpu", False), ("0.21.0", False)):
        (package / "version.py").write_text(f"__version__ = '{version}'\ncuda = None\n")
        assert _compat._torchvision_cuda_build() is cuda_wheel, version
        assert _compat.needs_torchvision_patch() is cuda_wheel, version
    (package / "version.py").write_text("__version__ = '0.21.0+cu124'\n")
    monkeypatch.setattr(torch.version, "cuda", "12.4")  # a CUDA torch needs no shim
    assert not _compat.needs_torchvision_patch()


def test_attention_defaults_to_sdpa_without_cuda(monkeypatch):
    monkeypatch.setattr(_compat, "xformers_available", lambda: False)
    assert _compat.configure_attention(object()) == "sdpa"
    assert _compat.configure_attention(object(), use_xformers=False) == "sdpa"
    with pytest.raises(RuntimeError, match="xformers"):
        _compat.configure_attention(object(), use_xformers=True)


def test_xformers_enabled_when_present(monkeypatch):
    calls = []

    class Pipe:
        def enable_xformers_memory_efficient_attention(self):
            calls.append(True)

    monkeypatch.setattr(_compat, "xformers_available", lambda: True)
    assert _compat.configure_attention(Pipe()) == "xformers" and calls == [True]


def _env_after_import(**preset: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORT_")}
    env.update(preset)
    code = "import os, saferclip_diffusers; print(os.environ['ORT_DISABLE_TELEMETRY'], os.environ['ORT_TELEMETRY_DISABLED'])"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()


def test_importing_the_package_opts_out_of_onnxruntime_telemetry():
    # set before onnxruntime can initialise; tests/test_no_egress.py proves the effect in a network namespace
    assert _env_after_import() == "1 1"


def test_a_users_own_telemetry_setting_is_kept():
    assert _env_after_import(ORT_DISABLE_TELEMETRY="0") == "0 1"
