""" "Interpreted as": the captions nearest to a prompt in the original and in the safe encoder's space.

A pool of captions shipped with the package (COCO captions, ``saferclip_diffusers.data.COCO_30K_CSV``) is
embedded once with every encoder the pipeline uses and cached on disk. The space of a pipeline side is its
text encoders' pooled embeddings, L2-normalised; the similarity of a prompt and a caption is the cosine, averaged
over the encoder slots that were swapped (SD: one slot; SDXL: one or two), the same slots as the redirection
score. So the safe side's neighbours show where the safe encoder sends a prompt.

Cache layout: ``<cache_dir>/<encoder fingerprint>/<chunk hash>.safetensors``, one file per chunk of captions,
written atomically. The fingerprint is taken from the encoder's class, config, dtype, tokenizer and a strided
sample of every weight tensor, so a retrained encoder saved at the same path gets a new key. Chunks are keyed by
their captions, so an interrupted run resumes and a larger pool reuses the chunks it shares with a smaller one.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from ..data import COCO_30K_CSV
from ..io import atomic_save_safetensors
from ..pipelines.conditioning import encode_text

DEFAULT_POOL_SIZE = 5000
CHUNK_SIZE = 512
_SAMPLES_PER_TENSOR = 4096


def default_cache_dir() -> Path:
    """``$SAFERCLIP_CACHE/captions`` or ``$XDG_CACHE_HOME/saferclip_diffusers/captions`` (``~/.cache``)."""
    root = os.environ.get("SAFERCLIP_CACHE")
    if root:
        return Path(root) / "captions"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "saferclip_diffusers" / "captions"


def load_captions(path: str | os.PathLike = COCO_30K_CSV, limit: int | None = DEFAULT_POOL_SIZE) -> list[str]:
    """The first ``limit`` distinct captions of a CSV with a ``prompt`` column (the bundled COCO captions)."""
    if limit is not None and limit < 1:
        raise ValueError(f"the caption pool needs at least 1 caption, got limit={limit}")
    from ..datasets import read_records

    if not Path(path).is_file():
        raise FileNotFoundError(f"caption file not found: {path}")
    rows = read_records(path)
    if rows and "prompt" not in rows[0]:
        raise ValueError(f"{path} has no 'prompt' column; give a CSV with one caption per row in 'prompt'")
    column = {"prompt": [str(r.get("prompt") or "") for r in rows]}
    captions = list(dict.fromkeys(c.strip() for c in column["prompt"] if c.strip()))
    if not captions:
        raise ValueError(f"{path} holds no captions")
    return captions[:limit] if limit is not None else captions


def encoder_fingerprint(encoder: torch.nn.Module, tokenizer) -> str:
    """A short key that changes when the encoder's weights, config, dtype or tokenizer change."""
    digest = hashlib.sha256()
    config = encoder.config.to_dict()
    for volatile in ("_name_or_path", "transformers_version", "_commit_hash", "torch_dtype", "dtype"):
        config.pop(volatile, None)
    digest.update(type(encoder).__name__.encode())
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    digest.update(f"{type(tokenizer).__name__}|{len(tokenizer)}|{tokenizer.model_max_length}".encode())
    with torch.no_grad():
        for name, tensor in sorted(encoder.state_dict().items()):
            flat = tensor.detach().reshape(-1)
            step = max(1, flat.numel() // _SAMPLES_PER_TENSOR)
            sample = flat[::step][:_SAMPLES_PER_TENSOR].float().cpu().contiguous()
            digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
            digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:20]


@torch.no_grad()
def pooled_embeddings(
    tokenizer, encoder: torch.nn.Module, texts: Sequence[str], batch_size: int = 64
) -> torch.Tensor:
    """L2-normalised pooled embeddings (float32, on CPU) of ``texts``, as the pipeline's encoding computes them."""
    out = []
    for start in range(0, len(texts), batch_size):
        pooled = encode_text(
            tokenizer, encoder, list(texts[start : start + batch_size]), layer="final"
        ).pooled
        out.append(torch.nn.functional.normalize(pooled.float(), dim=-1).cpu())
    return torch.cat(out)


def _chunk_key(captions: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(captions).encode()).hexdigest()[:20]


def embed_pool(
    captions: Sequence[str],
    tokenizer,
    encoder: torch.nn.Module,
    cache_dir: str | os.PathLike,
    *,
    chunk_size: int = CHUNK_SIZE,
    desc: str = "embedding captions",
    on_chunk: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Embeddings of ``captions`` (N, P), computed chunk by chunk with a progress bar, or read from the cache.
    ``on_chunk(n)`` is called after each chunk with the number of captions it held."""
    folder = Path(cache_dir) / encoder_fingerprint(encoder, tokenizer)
    parts = []
    with tqdm(total=len(captions), desc=desc, unit="caption") as bar:
        for start in range(0, len(captions), chunk_size):
            chunk = list(captions[start : start + chunk_size])
            path = folder / f"{_chunk_key(chunk)}.safetensors"
            part = None
            if path.is_file():
                try:
                    part = load_file(path)["embeddings"]
                except Exception:  # noqa: BLE001 - a damaged cache file is recomputed, not fatal
                    part = None
                if part is not None and part.shape[0] != len(chunk):
                    part = None
            if part is None:
                part = pooled_embeddings(tokenizer, encoder, chunk)
                atomic_save_safetensors({"embeddings": part.contiguous()}, path)
            parts.append(part)
            bar.update(len(chunk))
            if on_chunk is not None:
                on_chunk(len(chunk))
    return torch.cat(parts)


@dataclass(frozen=True)
class _Slot:
    tokenizer: object
    encoder: torch.nn.Module
    captions: torch.Tensor  # (N, P) normalised


class CaptionInterpreter:
    """Nearest pool captions to a prompt on the original and on the safe side of a Safer pipeline."""

    def __init__(
        self,
        pipe,
        captions: Sequence[str],
        cache_dir: str | os.PathLike | None = None,
        *,
        chunk_size: int = CHUNK_SIZE,
        progress: Callable[[int, int], None] | None = None,
    ):
        """Embed ``captions`` with every swapped encoder slot on both sides; ``progress(done, total)`` counts
        caption embeddings (``total`` = captions x slots x 2 sides)."""
        if not pipe.has_original:
            raise ValueError(
                "'Interpreted as' needs the original text encoder(s): load the pipeline with keep_original=True"
            )
        if not captions:
            raise ValueError("the caption pool is empty")
        self.captions = list(captions)
        self._lock = threading.Lock()
        cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        tokenizers = dict(pipe._slots)
        slots = pipe.safe_slots or list(tokenizers)
        total, done = 2 * len(slots) * len(self.captions), 0

        def on_chunk(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(done, total)

        self.spaces: dict[str, list[_Slot]] = {}
        for side in ("original", "safe"):
            self.spaces[side] = []
            for slot in slots:
                encoder = pipe.original_encoder(slot) if side == "original" else getattr(pipe, slot)
                # its own copy: fast tokenizers change their padding mode in place, so sharing one across
                # threads (the pipeline generating while this encodes a prompt) corrupts batches
                tokenizer = copy.deepcopy(getattr(pipe, tokenizers[slot]))
                table = embed_pool(
                    self.captions,
                    tokenizer,
                    encoder,
                    cache_dir,
                    chunk_size=chunk_size,
                    desc=f"{side} {slot}: embedding {len(self.captions)} captions",
                    on_chunk=on_chunk,
                )
                self.spaces[side].append(_Slot(tokenizer, encoder, table))

    def similarities(self, prompt: str) -> dict[str, torch.Tensor]:
        """Per side, the cosine of the prompt with every pool caption (averaged over slots), shape (N,)."""
        out = {}
        with self._lock:  # one prompt at a time through this interpreter's tokenizers (milliseconds)
            for side, slots in self.spaces.items():
                sims = [s.captions @ pooled_embeddings(s.tokenizer, s.encoder, [prompt])[0] for s in slots]
                out[side] = torch.stack(sims).mean(dim=0)
        return out

    def nearest(self, prompt: str, k: int = 5) -> dict[str, list[tuple[str, float]]]:
        """Per side (``"original"``, ``"safe"``), the ``k`` most similar captions with their cosine, best first."""
        k = max(1, min(k, len(self.captions)))
        result = {}
        for side, sims in self.similarities(prompt).items():
            values, index = sims.topk(k)
            result[side] = [
                (self.captions[i], float(v)) for v, i in zip(values.tolist(), index.tolist(), strict=True)
            ]
        return result
