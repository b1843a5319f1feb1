"""Proximity mining equals brute force; duplicates are removed."""

import torch

from saferclip_diffusers.training.mining import dedupe, mine_targets, nearest_neighbours


def brute_force(q, k):
    sims = torch.nn.functional.normalize(q, dim=-1) @ torch.nn.functional.normalize(k, dim=-1).T
    return sims.max(dim=1)


def test_chunked_search_equals_brute_force():
    g = torch.Generator().manual_seed(0)
    q, k = (
        torch.randn(37, 6, generator=g) * 3,
        torch.randn(101, 6, generator=g) * 0.1,
    )  # unnormalised on purpose
    expected_sim, expected_idx = brute_force(q, k)
    for chunk in (1, 7, 16, 1000):
        idx, sim = nearest_neighbours(q, k, chunk_size=chunk)
        assert torch.equal(idx, expected_idx), chunk
        assert torch.allclose(sim, expected_sim, atol=1e-6), chunk


def test_ties_go_to_the_first_key_across_chunks():
    k = torch.tensor([[0.0, 1.0], [1.0, 0.0], [2.0, 0.0], [1.0, 0.0]])  # rows 1, 2, 3 are the same direction
    idx, sim = nearest_neighbours(torch.tensor([[1.0, 0.0]]), k, chunk_size=2)
    assert idx.tolist() == [1] and sim.item() == 1.0


def test_candidates_map_back_to_full_indices():
    g = torch.Generator().manual_seed(1)
    unsafe, safe = torch.randn(20, 5, generator=g), torch.randn(50, 5, generator=g)
    candidates = torch.arange(0, 50, 3)
    idx, sim = mine_targets(unsafe, safe, candidates, chunk_size=4)
    exp_sim, exp_local = brute_force(unsafe, safe[candidates])
    assert torch.equal(idx, candidates[exp_local])
    assert set(idx.tolist()) <= set(candidates.tolist())
    assert torch.allclose(sim, exp_sim, atol=1e-6)


def test_dedupe_case_and_whitespace():
    texts = ["A cat on a mat.", "a  cat on a mat.", "A dog", " A DOG ", "a bird"]
    keep, inverse = dedupe(texts)
    assert keep == [0, 2, 4]
    assert inverse == [0, 0, 1, 1, 2]
