"""A tiny T5 text encoder (``T5EncoderModel``) with its offline tokenizer: SD3's ``text_encoder_3``, FLUX's
``text_encoder_2``."""

from __future__ import annotations

import os
from pathlib import Path

from ._rng import rng_neutral, seeded
from .clip import TEXT_WIDTH, TEXT_WIDTH_G
from .tokenizers import save_t5_tokenizer

T5_WIDTH = (
    96  # d_model: SD3 pads the CLIP channels (32 + 48 = 80) up to it, as 768 + 1280 up to T5-XXL's 4096
)
T5_MAX_LENGTH = 512
assert T5_WIDTH >= TEXT_WIDTH + TEXT_WIDTH_G


def tiny_t5_config(vocab_size: int):
    from transformers import T5Config

    return T5Config(
        vocab_size=vocab_size,
        d_model=T5_WIDTH,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        dropout_rate=0.0,
        feed_forward_proj="gated-gelu",  # T5 v1.1, as in SD3 and FLUX's T5-XXL
        is_encoder_decoder=False,
        use_cache=False,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )


@rng_neutral
def build_tiny_t5(directory: str | os.PathLike, seed: int = 0) -> Path:
    """A tiny ``T5EncoderModel`` directory that also holds its tokenizer (``tokenizer.json``)."""
    from transformers import T5EncoderModel

    directory = Path(directory)
    tokenizer = save_t5_tokenizer(directory, model_max_length=T5_MAX_LENGTH)
    with seeded(seed):
        model = T5EncoderModel(tiny_t5_config(len(tokenizer))).eval()
    model.save_pretrained(directory, safe_serialization=True)
    return directory
