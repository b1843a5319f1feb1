"""Shared helpers for the training tests: small, fast variants of the shipped tiny configs."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import saferclip_diffusers  # noqa: E402,F401  (applies the torchvision workaround before transformers)
from saferclip_diffusers.training.config import load_config  # noqa: E402

SMALL = [
    "data.max_unsafe=24",
    "data.max_safe=48",
    "data.val_size=4",
    "optim.batch_size=4",
    "optim.epochs=2",
    "run.checkpoint_every=1000",
    "run.log_every=1",
    "run.encode_batch_size=64",
]


@pytest.fixture
def small_config():
    """``small_config(*overrides, base="tiny")``: a seconds-long variant of a shipped tiny config."""

    def make(*overrides: str, base: str = "tiny"):
        return load_config(base, SMALL + list(overrides))

    return make


@pytest.fixture
def fresh_accelerate():
    """accelerate keeps one process-wide state; reset it around a test that needs other precision settings."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core runner threads oversubscribe."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
