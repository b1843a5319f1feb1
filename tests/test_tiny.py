"""The tiny offline models: deterministic, real CLIP BPE, coherent across the tiny chain."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import CLIPModel, CLIPTextModel, CLIPTokenizer

from saferclip_diffusers import tiny


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
    assert ours[1:-1] == reference.encode(text)  # the same BPE: ids agree wherever the merges are in the vocab


def test_full_vocabulary_size():
    vocab, merges = tiny.clip_bpe_vocab(48894)
    assert len(vocab) == 49408 and vocab["<|endoftext|>"] == 49407


def test_builders_are_deterministic_from_seed(tmp_path):
    a = load_file(tiny.build_tiny_clip(tmp_path / "a", seed=3) / "model.safetensors")
    b = load_file(tiny.build_tiny_clip(tmp_path / "b", seed=3) / "model.safetensors")
    c = load_file(tiny.build_tiny_clip(tmp_path / "c", seed=4) / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_sd_text_encoder_is_the_tiny_clip_text_tower():
    clip = CLIPModel.from_pretrained(tiny.tiny_model_dir("clip"))
    te = CLIPTextModel.from_pretrained(tiny.tiny_model_dir("sd"), subfolder="text_encoder")
    torch.testing.assert_close(te.embeddings.token_embedding.weight, clip.text_model.embeddings.token_embedding.weight)
    tok = CLIPTokenizer.from_pretrained(tiny.tiny_model_dir("sd"), subfolder="tokenizer")
    assert te.config.eos_token_id == tok.eos_token_id


def test_sdxl_layout_widths():
    root = tiny.tiny_model_dir("sdxl")
    unet = json.loads((root / "unet" / "config.json").read_text())
    assert unet["cross_attention_dim"] == tiny.TEXT_WIDTH + tiny.TEXT_WIDTH_G
    tok2 = json.loads((root / "tokenizer_2" / "tokenizer_config.json").read_text())
    assert tok2["pad_token"] == "!"


def test_cache_is_atomic_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("SAFERCLIP_TINY_CACHE", str(tmp_path))
    first = tiny.tiny_model_dir("clip", seed=5)
    assert (first / ".complete").is_file()
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert tiny.tiny_model_dir("clip", seed=5) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp
    assert not [p for p in tmp_path.rglob("clip-seed5.*")]  # no temporary build directories left behind
    with pytest.raises(ValueError, match="unknown tiny model kind"):
        tiny.tiny_model_dir("unet")
