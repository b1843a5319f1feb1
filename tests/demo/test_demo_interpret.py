"""'Interpreted as': caption pool, encoder fingerprints, the chunked on-disk cache and nearest captions."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from saferclip_diffusers.demo.interpret import (
    CaptionInterpreter,
    embed_pool,
    encoder_fingerprint,
    load_captions,
    pooled_embeddings,
)


def test_load_captions_takes_the_first_distinct_ones(tmp_path):
    captions = load_captions(limit=50)
    assert len(captions) == 50 and len(set(captions)) == 50
    assert captions[0] == "A bicycle replica with a clock as the front wheel."
    csv = tmp_path / "pool.csv"
    csv.write_text("prompt,other\n a dog ,1\na dog,2\n,3\na cat,4\n")
    assert load_captions(csv, limit=None) == ["a dog", "a cat"]


def test_load_captions_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="caption file not found"):
        load_captions(tmp_path / "missing.csv")
    (tmp_path / "bad.csv").write_text("caption\na dog\n")
    with pytest.raises(ValueError, match="no 'prompt' column"):
        load_captions(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="at least 1 caption"):
        load_captions(limit=0)


def test_pooled_embeddings_match_the_pipeline_encoding_and_are_unit_length(tiny_pipe):
    texts = ["a cat", "a dog on a sofa", "a red car"]
    got = pooled_embeddings(tiny_pipe.tokenizer, tiny_pipe.text_encoder, texts, batch_size=2)
    # transformers' own pooled output (the end-of-text state after the final norm) of the padded prompts
    tok = tiny_pipe.tokenizer
    ids = tok(
        texts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt"
    )
    with torch.no_grad():
        ref = tiny_pipe.text_encoder(ids.input_ids).pooler_output
    assert got.shape == ref.shape and torch.allclose(got.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(got, torch.nn.functional.normalize(ref, dim=-1), atol=1e-5)


def test_fingerprint_follows_the_weights_not_the_object(tiny_pipe):
    safe, original, tok = tiny_pipe.text_encoder, tiny_pipe.original_text_encoder, tiny_pipe.tokenizer
    assert encoder_fingerprint(safe, tok) != encoder_fingerprint(original, tok)
    twin = type(original)(original.config)
    twin.load_state_dict(original.state_dict())
    assert encoder_fingerprint(twin, tok) == encoder_fingerprint(original, tok)
    with torch.no_grad():
        weight = next(p for n, p in twin.named_parameters() if n.endswith("final_layer_norm.weight"))
        weight.add_(1e-3)  # a small retraining-like change
    assert encoder_fingerprint(twin, tok) != encoder_fingerprint(original, tok)


def test_embed_pool_writes_chunks_once_and_reuses_them(tiny_pipe, tmp_path):
    captions = load_captions(limit=70)
    tok, enc = tiny_pipe.tokenizer, tiny_pipe.text_encoder
    first = embed_pool(captions, tok, enc, tmp_path, chunk_size=32)
    files = sorted(tmp_path.rglob("*.safetensors"))
    assert first.shape == (70, enc.config.hidden_size) and len(files) == 3  # 32 + 32 + 6
    assert not list(tmp_path.rglob(".tmp-*"))
    assert torch.allclose(first, pooled_embeddings(tok, enc, captions), atol=1e-5)

    # Cached chunks are read back, not recomputed: poison one and it is what comes back.
    poisoned = files[0]
    table = load_file(poisoned)["embeddings"]
    from safetensors.torch import save_file

    save_file({"embeddings": torch.zeros_like(table)}, poisoned)
    again = embed_pool(captions, tok, enc, tmp_path, chunk_size=32)
    zero_rows = (again.abs().sum(dim=1) == 0).sum().item()
    assert zero_rows == 32 and len(sorted(tmp_path.rglob("*.safetensors"))) == 3

    # A damaged file is recomputed; a larger pool reuses the chunks it shares with the smaller one.
    poisoned.write_bytes(b"not a safetensors file")
    repaired = embed_pool(captions, tok, enc, tmp_path, chunk_size=32)
    assert torch.allclose(repaired, first, atol=1e-6)
    embed_pool(load_captions(limit=96), tok, enc, tmp_path, chunk_size=32)
    assert (
        len(sorted(tmp_path.rglob("*.safetensors"))) == 4
    )  # only the third chunk changed (6 -> 32 captions)


def test_a_pool_caption_is_its_own_nearest_neighbour_on_both_sides(tiny_engine):
    interpreter = tiny_engine.interpreter
    caption = interpreter.captions[17]
    near = interpreter.nearest(caption, k=3)
    for side in ("original", "safe"):
        assert len(near[side]) == 3
        assert near[side][0][0] == caption and near[side][0][1] == pytest.approx(1.0, abs=1e-4)
        scores = [s for _, s in near[side]]
        assert scores == sorted(scores, reverse=True)


def test_the_two_sides_use_the_two_encoders(tiny_engine, tiny_pipe):
    prompt = "a man riding a horse on a beach"
    sims = tiny_engine.interpreter.similarities(prompt)
    caption_table = tiny_engine.interpreter.spaces["original"][0].captions
    expected = (
        caption_table @ pooled_embeddings(tiny_pipe.tokenizer, tiny_pipe.original_text_encoder, [prompt])[0]
    )
    assert torch.allclose(sims["original"], expected, atol=1e-5)
    assert not torch.allclose(sims["original"], sims["safe"], atol=1e-3)  # the perturbed safe encoder differs


def test_sdxl_averages_over_both_swapped_slots(tmp_path):
    from saferclip_diffusers.demo.loading import load_demo_pipeline, resolve_model

    pipe = load_demo_pipeline(resolve_model("tiny-sdxl"), device="cpu")
    assert pipe.safe_slots == ["text_encoder", "text_encoder_2"]
    interpreter = CaptionInterpreter(pipe, load_captions(limit=20), tmp_path)
    prompt = "a bowl of fruit"
    per_slot = []
    for slot, tok in (("text_encoder", pipe.tokenizer), ("text_encoder_2", pipe.tokenizer_2)):
        table = pooled_embeddings(tok, getattr(pipe, slot), interpreter.captions)
        per_slot.append(table @ pooled_embeddings(tok, getattr(pipe, slot), [prompt])[0])
    assert torch.allclose(
        interpreter.similarities(prompt)["safe"], (per_slot[0] + per_slot[1]) / 2, atol=1e-5
    )
    # the same pooled embeddings give the pipeline's redirection score (the lowest cosine over swapped slots)
    cosines = [  # dot products of the unit-length pooled embeddings
        float(
            pooled_embeddings(tok, pipe.original_encoder(slot), [prompt])[0]
            @ pooled_embeddings(tok, getattr(pipe, slot), [prompt])[0]
        )
        for slot, tok in (("text_encoder", pipe.tokenizer), ("text_encoder_2", pipe.tokenizer_2))
    ]
    assert pipe.redirection_scores(prompt)[0] == pytest.approx(min(cosines), abs=1e-5)


def test_interpreter_needs_the_original_encoder(tiny_pipe):
    import copy

    no_original = copy.copy(tiny_pipe)
    no_original.original_text_encoder = None
    with pytest.raises(ValueError, match="keep_original=True"):
        CaptionInterpreter(no_original, ["a cat"], "/nonexistent")
