"""Tiny CLIP text towers for the encoder tests (random weights, built in milliseconds)."""

from __future__ import annotations

import pytest
import torch
from transformers import CLIPTextConfig


def tiny_text_config(
    width: int = 32,
    layers: int = 2,
    heads: int = 4,
    projection: int | None = None,
    act: str = "quick_gelu",
    vocab: int = 1000,
) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=vocab,
        hidden_size=width,
        intermediate_size=width * 2 + 3,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=77,
        hidden_act=act,
        projection_dim=projection or width,
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
    )


@pytest.fixture
def ids() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(3, 990, (2, 77), generator=generator)
    tokens[:, 0] = 0
    tokens[0, 9], tokens[1, 40] = (
        999,
        999,
    )  # an "end of text" (the highest id) where the pooled vector is read
    return tokens
