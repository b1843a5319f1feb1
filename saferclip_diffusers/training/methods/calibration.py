"""Calibration pairs and the export of a training-free method, on the same data readers as the trained methods.

Pairs: with paired data (ViSU, NSFW-Caps, ``pairs``) each training unsafe caption and its partner; with unpaired
data (``bundled:i2p`` + ``bundled:coco``) each training unsafe prompt and its proximity target (nearest training
safe caption in the frozen space of encoder ``mining.encoder``), as the trained methods mine them. Validation
items stay out. The export has the layout of every other safe encoder (see :mod:`..export`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...io import EXPORT_MARKER, atomic_write_json, atomic_write_text
from ..config import TrainConfig
from ..data import SafetyData, load_training_data
from ..mining import mine_targets
from ..split import Split, split_validation


def run_device(cfg: TrainConfig) -> torch.device:
    return torch.device("cpu" if cfg.run.cpu or not torch.cuda.is_available() else "cuda")


def tokenize_with_mask(tokenizer) -> Any:
    """``texts -> (input_ids, attention_mask)`` padded to the longest text, truncated at the model's length."""

    def fn(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = tokenizer(
            list(texts),
            padding="longest",
            truncation=True,
            max_length=tokenizer.model_max_length,
            return_tensors="pt",
        )
        return enc.input_ids, enc.attention_mask

    return fn


@torch.no_grad()
def pooled(
    model: torch.nn.Module, tokenize, texts: list[str], batch_size: int, device: torch.device
) -> torch.Tensor:
    """``text_embeds`` of ``texts`` (the embedding space the trained methods mine targets in); a projection-less
    ``CLIPTextModel`` (SD 2.x) gives its ``pooler_output`` (the final-LayerNorm end-of-text state)."""
    out = []
    for start in range(0, len(texts), batch_size):
        ids, mask = tokenize(texts[start : start + batch_size])
        res = model(input_ids=ids.to(device), attention_mask=mask.to(device))
        emb = getattr(res, "text_embeds", None)
        out.append((res.pooler_output if emb is None else emb).float().cpu())
    return torch.cat(out)


def calibration_pairs(
    data: SafetyData, split: Split, limit: int, seed: int, embed=None
) -> tuple[list[int], list[int]]:
    """(unsafe indices, safe indices) of up to ``limit`` calibration pairs, a seeded shuffle then truncation.

    ``embed(texts) -> [N, d]`` is needed only for unpaired data (proximity targets among training captions).
    """
    unsafe = np.asarray(split.train_unsafe)
    if data.paired:
        unsafe = unsafe[data.pair[unsafe] >= 0]
        safe = data.pair[unsafe]
    else:
        if embed is None:
            raise ValueError("unpaired data needs an encoder to mine each prompt's nearest safe caption")
        cand = torch.as_tensor(split.train_safe)
        u = embed([data.unsafe_texts[i] for i in unsafe])
        s = embed(data.safe_texts)
        safe = mine_targets(u, s, cand)[0].numpy()
    order = np.random.default_rng(seed).permutation(len(unsafe))[:limit]
    return [int(i) for i in unsafe[order]], [int(i) for i in safe[order]]


def load_data(cfg: TrainConfig) -> tuple[SafetyData, Split]:
    data = load_training_data(cfg.data)
    return data, split_validation(data, cfg.data.val_size, cfg.seed)


def export_training_free(
    out: Path,
    cfg: TrainConfig,
    towers: dict[str, Any],
    prompts: dict[str, list[str]],
    card: str,
    summary: dict,
) -> Path:
    """Write ``<slot>/`` (safetensors, export class of the slot), tokenizers, card, prompts; marker last."""
    from ...devices import parse_dtype
    from ..export import as_export_class

    out.mkdir(parents=True, exist_ok=True)
    (out / EXPORT_MARKER).unlink(missing_ok=True)
    atomic_write_text(out / "config.yaml", cfg.to_yaml())
    dtype = parse_dtype(cfg.export.dtype)
    for e in cfg.encoders:
        t = towers[e.slot]
        as_export_class(t.text, e.resolved_export_class()).to(dtype).save_pretrained(
            out / e.slot, safe_serialization=True
        )
        t.tokenizer.save_pretrained(out / e.slot.replace("text_encoder", "tokenizer"))
    atomic_write_json(out / "training_prompts.json", prompts)
    atomic_write_text(out / "README.md", card)
    atomic_write_json(out / EXPORT_MARKER, {"method": cfg.method, **summary})
    return out
