"""Tokenizers of the tiny models, built offline: CLIP's real BPE (truncated) and a tiny T5 Unigram.

The CLIP tokenizer uses the first ``TINY_MERGES`` merges of CLIP's BPE, bundled under
``saferclip_diffusers/data/clip_bpe/`` (MIT, provenance in its SOURCE.md), so core installs need no open_clip.
Token ids then match CLIP's (and open_clip's) tokenizer for every token the truncated vocabulary holds.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
from functools import lru_cache
from pathlib import Path

TINY_MERGES = 486  # 256 bytes + 256 "</w>" bytes + 486 merges + 2 specials = 1,000 tokens
FULL_MERGES = 49152 - 256 - 2  # 48,894 merges: CLIP's full 49,408-token vocabulary
BUNDLED_MERGES = Path(__file__).resolve().parent.parent / "data" / "clip_bpe" / "merges.txt"


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte -> printable unicode map (the same table as GPT-2 and open_clip)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def open_clip_bpe_file() -> Path:
    """open_clip's copy of CLIP's full BPE file (only needed for more than the bundled merges)."""
    spec = importlib.util.find_spec("open_clip")  # locate without importing (import costs seconds)
    if spec is None or spec.origin is None:
        raise ImportError(
            f"more than the {TINY_MERGES} bundled CLIP merges need open_clip's BPE file: pip install open_clip_torch"
        )
    path = Path(spec.origin).parent / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise FileNotFoundError(f"open_clip_torch does not ship its BPE vocabulary where expected: {path}")
    return path


def _merge_lines(num_merges: int) -> list[str]:
    bundled = BUNDLED_MERGES.read_text(encoding="utf-8").splitlines()
    if num_merges <= len(bundled):
        return bundled[:num_merges]
    lines = gzip.open(open_clip_bpe_file()).read().decode("utf-8").split("\n")
    return lines[1 : FULL_MERGES + 1][:num_merges]


@lru_cache(maxsize=4)
def clip_bpe_vocab(num_merges: int = TINY_MERGES) -> tuple[dict[str, int], list[str]]:
    """CLIP's vocabulary and merges, keeping the first ``num_merges`` merges (48,894 gives the full 49,408)."""
    if not 0 <= num_merges <= FULL_MERGES:
        raise ValueError(f"num_merges must lie in [0, {FULL_MERGES}], got {num_merges}")
    merges = _merge_lines(num_merges)
    byte_chars = list(_bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(tokens)}, merges


def save_clip_tokenizer(
    directory: str | os.PathLike, num_merges: int = TINY_MERGES, pad_token: str | None = None
):
    """Write ``vocab.json`` + ``merges.txt`` for a (truncated) CLIP BPE tokenizer and return it loaded."""
    from transformers import CLIPTokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_bpe_vocab(num_merges)
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    kwargs = {"model_max_length": 77}
    if pad_token is not None:
        kwargs["pad_token"] = pad_token
    tokenizer = CLIPTokenizer.from_pretrained(directory, **kwargs)
    tokenizer.save_pretrained(directory)
    return tokenizer


def t5_unigram_vocab() -> list[tuple[str, float]]:
    """A small deterministic SentencePiece-style vocabulary for the tiny T5.

    T5's layout (``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2), then the tiny CLIP vocabulary's pieces rewritten in
    SentencePiece form (a word-final CLIP piece ``cat</w>`` becomes the word-initial ``▁cat``), scored so that longer
    pieces win. Real words, so prompts tokenize into meaningful pieces rather than ``<unk>``.
    """
    vocab, _ = clip_bpe_vocab(TINY_MERGES)
    pieces: dict[str, float] = {"▁": -2.0}
    for token in vocab:
        if token.startswith("<|"):
            continue
        piece = "▁" + token[: -len("</w>")] if token.endswith("</w>") else token
        pieces.setdefault(piece, -10.0 + len(piece))
    return [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + sorted(
        pieces.items(), key=lambda kv: (-kv[1], kv[0])
    )


def save_t5_tokenizer(directory: str | os.PathLike, model_max_length: int = 512):
    """Write a tiny T5 tokenizer (``tokenizer.json``, loadable with ``T5TokenizerFast``) and return it loaded."""
    from transformers import T5TokenizerFast

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    T5TokenizerFast(vocab=t5_unigram_vocab(), extra_ids=0, model_max_length=model_max_length).save_pretrained(
        directory
    )
    return T5TokenizerFast.from_pretrained(directory)
