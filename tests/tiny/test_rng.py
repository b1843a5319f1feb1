"""Building tiny models never reads or advances the caller's random stream (issue 14 §2)."""

from __future__ import annotations

import random

import numpy as np
import torch

from saferclip_diffusers import tiny


def _draws():
    return torch.rand(4), random.random(), np.random.rand()


def _seed_all(seed: int):
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def test_building_with_an_empty_cache_leaves_the_callers_stream_untouched(tmp_path, monkeypatch):
    monkeypatch.setenv("SAFERCLIP_TINY_CACHE", str(tmp_path / "cache"))
    _seed_all(7)
    expected = _draws()
    _seed_all(7)
    tiny.tiny_model_dir("t5", seed=3)  # empty cache: builds, which initialises weights
    after_build = _draws()
    _seed_all(7)
    tiny.tiny_model_dir("t5", seed=3)  # full cache: reads only
    after_hit = _draws()
    for want, built, hit in zip(expected, after_build, after_hit, strict=True):
        assert torch.equal(torch.as_tensor(want), torch.as_tensor(built))
        assert torch.equal(torch.as_tensor(want), torch.as_tensor(hit))


def test_direct_builders_are_rng_neutral_and_seeded(tmp_path):
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    a = tiny.build_tiny_clip(tmp_path / "a", seed=5)
    assert torch.equal(torch.rand(3), expected)
    torch.manual_seed(12345)  # a different caller state must not change what is built
    b = tiny.build_tiny_clip(tmp_path / "b", seed=5)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()


def test_perturbation_uses_its_own_generator():
    layer = torch.nn.Linear(3, 3)
    torch.manual_seed(0)
    expected = torch.rand(2)
    torch.manual_seed(0)
    tiny.perturbed_text_encoder(layer, seed=4)
    assert torch.equal(torch.rand(2), expected)
