"""Tiny Safer pipelines for the attack tests (random weights, loaded once per session)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def sd_pipe(tiny_sd_dir, safe_sd_dir):
    from saferclip_diffusers.pipelines import SaferStableDiffusionPipeline

    return SaferStableDiffusionPipeline.from_pretrained(
        tiny_sd_dir,
        safe_text_encoder=safe_sd_dir,
        keep_original=True,
        dtype=torch.float32,
        local_files_only=True,
    )


@pytest.fixture(scope="session")
def sdxl_pipe(tiny_sdxl_dir, safe_sdxl_dir):
    from saferclip_diffusers.pipelines import SaferStableDiffusionXLPipeline

    return SaferStableDiffusionXLPipeline.from_pretrained(
        tiny_sdxl_dir,
        safe_text_encoder=safe_sdxl_dir,
        safe_text_encoder_2=safe_sdxl_dir,
        keep_original=True,
        dtype=torch.float32,
        local_files_only=True,
    )


@pytest.fixture(scope="session")
def identity_pipe(tiny_sd_dir):
    """A Safer SD pipeline whose 'safe' encoder is the original one (no swap)."""
    from saferclip_diffusers.pipelines import SaferStableDiffusionPipeline

    return SaferStableDiffusionPipeline.from_pretrained(
        tiny_sd_dir, safe_text_encoder=None, keep_original=True, dtype=torch.float32, local_files_only=True
    )


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models are far faster on one thread, above all on a shared, busy CPU (10x measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
