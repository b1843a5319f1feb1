"""The tiny tokenizers: CLIP's real BPE from the bundled merges (no open_clip needed) and a tiny T5 Unigram."""

from __future__ import annotations

import gzip
import json

import pytest
from transformers import T5TokenizerFast

from saferclip_diffusers import tiny
from saferclip_diffusers.tiny import tokenizers


def test_bundled_merges_are_the_first_merges_of_open_clips_file():
    source = tokenizers.open_clip_bpe_file()
    lines = gzip.open(source).read().decode("utf-8").split("\n")
    assert (
        tokenizers.BUNDLED_MERGES.read_text(encoding="utf-8").splitlines() == lines[1 : 1 + tiny.TINY_MERGES]
    )


def test_vocab_and_merges_files_are_byte_identical_to_the_open_clip_build(tmp_path, monkeypatch):
    bundled = tiny.save_clip_tokenizer(tmp_path / "bundled")
    tokenizers.clip_bpe_vocab.cache_clear()
    # force the open_clip path: pretend the bundled file holds no merges
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    monkeypatch.setattr(tokenizers, "BUNDLED_MERGES", empty)
    try:
        tiny.save_clip_tokenizer(tmp_path / "open_clip")
    finally:
        tokenizers.clip_bpe_vocab.cache_clear()
    for name in ("vocab.json", "merges.txt"):
        assert (tmp_path / "bundled" / name).read_bytes() == (tmp_path / "open_clip" / name).read_bytes(), (
            name
        )
    assert len(bundled) == 1000


def test_tokenizer_is_clip_bpe_matching_open_clip(tmp_path):
    import open_clip

    tok = tiny.save_clip_tokenizer(tmp_path)
    assert len(tok) == 1000 and tok.model_max_length == 77
    assert tok.convert_ids_to_tokens([998, 999]) == ["<|startoftext|>", "<|endoftext|>"]
    reference = open_clip.tokenizer.SimpleTokenizer()
    vocab, _ = tiny.clip_bpe_vocab()
    assert all(reference.encoder[token] == idx for token, idx in vocab.items() if not token.startswith("<|"))
    text = "a red man with an old one at this"
    assert max(reference.encode(text)) < 998  # only tokens the truncated vocabulary holds
    ours = tok(text).input_ids
    assert ours[0] == tok.bos_token_id and ours[-1] == tok.eos_token_id
    assert ours[1:-1] == reference.encode(
        text
    )  # the same BPE: ids agree wherever the merges are in the vocab


def test_full_vocabulary_size():
    vocab, merges = tiny.clip_bpe_vocab(48894)
    assert len(vocab) == 49408 and vocab["<|endoftext|>"] == 49407 and len(merges) == 48894


def test_merge_count_is_range_checked():
    with pytest.raises(ValueError, match=r"num_merges must lie in \[0, 48894\]"):
        tiny.clip_bpe_vocab(-1)


def test_t5_tokenizer_has_t5_layout_and_real_pieces(tmp_path):
    tiny.save_t5_tokenizer(tmp_path, model_max_length=64)
    assert (tmp_path / "tokenizer.json").is_file()
    tok = T5TokenizerFast.from_pretrained(tmp_path)  # the class SD3 and FLUX load for their T5 slot
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert tok.model_max_length == 64
    ids = tok("a photo of the man").input_ids
    assert ids[-1] == tok.eos_token_id and tok.unk_token_id not in ids
    assert tok.convert_ids_to_tokens(ids)[:1] == ["▁a"]  # SentencePiece word-initial pieces
    padded = tok(["a cat"], padding="max_length", max_length=16).input_ids[0]
    assert len(padded) == 16 and padded[-1] == 0
    spec = json.loads((tmp_path / "tokenizer.json").read_text())
    assert spec["model"]["type"] == "Unigram"
