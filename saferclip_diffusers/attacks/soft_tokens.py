"""Soft tokens: run a CLIP text encoder on given token embeddings instead of looked-up ones.

transformers 5's ``CLIPTextModel.forward`` takes no ``inputs_embeds``. Instead of patching transformers (as the
MMA-Diffusion, UnlearnDiffAtk and AdvUnlearn code bases did with copies of the CLIP code), a forward hook on the
encoder's input-embedding layer (``get_input_embeddings()``) replaces that layer's output with the given tensor.
The encoder is still called with real ``input_ids``, so transformers builds the causal mask, adds position
embeddings and pools at the end-of-text token exactly as in a plain forward; with ``embeds = W[input_ids]`` the
outputs are bit-identical to the plain forward (tested for SD and SDXL encoders, with and without peft LoRA).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def input_embedding_layer(encoder: nn.Module) -> nn.Embedding:
    """The token-embedding layer of a CLIP text encoder (plain, with projection, or peft-wrapped)."""
    layer = encoder.get_input_embeddings()
    if layer is None or not hasattr(layer, "weight"):
        raise TypeError(f"{type(encoder).__name__} has no input-embedding layer with a weight matrix")
    return layer


def embedding_matrix(encoder: nn.Module) -> torch.Tensor:
    """The (vocab, width) token-embedding matrix ``W`` of ``encoder``."""
    return input_embedding_layer(encoder).weight


@contextlib.contextmanager
def soft_tokens(encoder: nn.Module, embeds: torch.Tensor) -> Iterator[None]:
    """Inside this block, every forward of ``encoder`` uses ``embeds`` (B, L, D) as its token embeddings.

    The ``input_ids`` passed to the encoder must have the same (B, L) shape; they still decide the causal mask
    and where CLIP pools (the first end-of-text token), so keep real BOS/EOS/pad ids around soft positions.
    """
    layer = input_embedding_layer(encoder)

    def replace(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        if output.shape != embeds.shape:
            raise ValueError(
                f"soft token embeddings have shape {tuple(embeds.shape)}, the encoder's input ids "
                f"give {tuple(output.shape)}: they must match"
            )
        return embeds.to(output.dtype)

    handle = layer.register_forward_hook(replace)
    try:
        yield
    finally:
        handle.remove()


def with_soft_rows(
    encoder: nn.Module, input_ids: torch.Tensor, positions: torch.Tensor | list[int], rows: torch.Tensor
) -> torch.Tensor:
    """Token embeddings ``W[input_ids]`` with ``rows`` (B or 1, k, D) placed at ``positions`` (k indices).

    Gradients flow into ``rows`` (e.g. ``one_hot @ W`` or free adversarial vectors); the other rows are plain
    look-ups of ``W``.
    """
    weight = embedding_matrix(encoder)
    base = weight[input_ids]
    positions = torch.as_tensor(positions, device=input_ids.device, dtype=torch.long)
    rows = rows.to(base.dtype).expand(base.shape[0], -1, -1)
    index = positions.view(1, -1, 1).expand(base.shape[0], -1, base.shape[-1])
    return base.scatter(1, index, rows)
