"""The machine / device / versions record that every section carries."""

from __future__ import annotations

import pytest
import torch

from bench.environment import describe, environment


def test_environment_names_machine_device_and_versions():
    env = environment("cpu")
    assert env["device"] == "cpu"
    assert env["machine"]["cores"] >= 1
    assert env["machine"]["cpu"]
    assert env["machine"]["ram_gb"] > 0
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
