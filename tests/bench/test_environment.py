"""The machine / device / versions record that every section carries."""

from __future__ import annotations

import os

import pytest
import torch

from bench.environment import describe, environment


def test_environment_names_machine_device_and_versions():
    env = environment("cpu")
    assert env["device"] == "cpu"
    assert env["machine"]["cores"] == os.cpu_count()
    assert env["machine"]["cpu"]
    # physical memory as the OS counts it in pages (MemTotal on Linux), in GiB to one decimal
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    assert env["machine"]["ram_gb"] == pytest.approx(ram, abs=0.11)
    assert (
        env["versions"]["torch"] == torch.__version__.split("+")[0]
        or env["versions"]["torch"] == torch.__version__
    )
    assert env["versions"]["diffusers"] and env["versions"]["transformers"]
    line = describe(env)
    assert env["machine"]["cpu"] in line and "diffusers" in line and "device cpu" in line


def test_cuda_device_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        assert "gpu" in environment("cuda")
    else:
        with pytest.raises(RuntimeError, match="no CUDA device"):
            environment("cuda")
