"""Shared helpers for the training tests: small, fast variants of the shipped tiny configs."""

import pytest

from saferclip_diffusers.training.config import load_config

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


@pytest.fixture(scope="session")
def small_overrides() -> list[str]:
    return list(SMALL)


@pytest.fixture
def trainable_state():
    """``trainable_state(trainer)``: a copy of the trainer's trainable parameters by name."""

    def grab(trainer) -> dict:
        model = trainer.accelerator.unwrap_model(trainer.model)
        return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    return grab


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
