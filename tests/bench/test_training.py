"""The training benchmark on the tiny config: the recomputing trainer, step timing, mining, the target."""

from __future__ import annotations

import copy
import statistics

import pytest
import torch

from bench import training as tb


@pytest.fixture(scope="module")
def quick():
    return tb.default_config(quick=True)


def test_recompute_callback_recomputes_exactly_the_cached_reference(quick, tmp_path):
    from saferclip_diffusers.training.trainer import Trainer

    cfg = tb.train_config(quick, tmp_path)
    recompute_cb = tb.Recompute()
    with (
        Trainer(copy.deepcopy(cfg), tmp_path / "cached") as cached,
        Trainer(copy.deepcopy(cfg), tmp_path / "recompute", callbacks=[recompute_cb]) as recompute,
    ):
        cached.setup()
        recompute.setup()
        slot = cached.bundles[0].slot
        # wipe the recomputing trainer's reference: whatever a step reads must be recomputed, not read from the cache
        frozen = recompute.frozen[slot]
        frozen.text_unsafe.zero_()
        frozen.text_safe.zero_()
        (u, keep) = recompute.epoch_plan(1)[0]
        u, keep = u[: cfg.optim.batch_size], keep[: cfg.optim.batch_size]
        recompute.batch_loss(u, keep)
        assert len(recompute_cb.seconds) == 1
        ref = cached.frozen[slot]
        hat = recompute.targets.text[torch.as_tensor(u)]
        torch.testing.assert_close(frozen.text_unsafe[u], ref.text_unsafe[u], atol=1e-5, rtol=1e-4)
        rows = torch.cat([torch.as_tensor(keep), hat])
        torch.testing.assert_close(frozen.text_safe[rows], ref.text_safe[rows], atol=1e-5, rtol=1e-4)
        # rows the step did not read stay as they were (zero)
        untouched = torch.ones(len(frozen.text_unsafe), dtype=torch.bool)
        untouched[torch.as_tensor(u)] = False
        assert frozen.text_unsafe[untouched].abs().sum() == 0


def test_step_times_are_paired_per_round(quick):
    steps = tb.measure_step_times(quick)
    assert steps["speedup"]["n"] == quick.rounds
    # the speedup pairs the two trainers round by round: median over rounds of recompute / cached
    rounds = zip(steps["per_round"]["recompute"], steps["per_round"]["cached"], strict=True)
    assert steps["speedup"]["median"] == pytest.approx(statistics.median(r / c for r, c in rounds))
    for name in ("cached", "recompute"):
        assert steps["step_seconds"][name]["n"] == quick.rounds * (quick.steps_per_call - 1)
        assert steps["step_seconds"][name]["median"] > 0
    assert steps["recompute_seconds"]["n"] == quick.rounds * quick.steps_per_call
    assert steps["settings"]["batch_size"] == quick.batch_size
    assert steps["settings"]["captions"]["unsafe"] == quick.max_unsafe


def test_mining_runs_each_size_in_a_fresh_process():
    rows = tb.measure_mining([(50, 300), (50, 20_000)], dim=16, chunk=128)
    assert [(r["unsafe"], r["safe"]) for r in rows] == [(50, 300), (50, 20_000)]
    assert all(r["seconds"] > 0 and r["pairs_per_second"] > 0 for r in rows)
    assert rows[1]["input_bytes"] == (50 + 20_000) * 16 * 4
    # beyond its inputs, mining holds at most a copy of them plus chunk x chunk similarities (and allocator slack)
    assert 0 <= rows[1]["extra_peak_rss_bytes"] < 2 * rows[1]["input_bytes"] + 64 * 2**20


def test_mine_once_in_process():
    row = tb.mine_once(20, 100, dim=8, chunk=16)
    assert row["unsafe"] == 20 and row["safe"] == 100 and row["cuda_peak_bytes"] is None


def _steps(speedup: float) -> dict:
    stats = lambda m: {"median": m, "q1": m, "q3": m, "min": m, "max": m, "n": 3}  # noqa: E731
    return {
        "settings": {
            "config": "sd15",
            "model": "clip-l",
            "batch_size": 16,
            "mixed_precision": "bf16",
            "finetune": "lora",
            "lora_r": 16,
            "threads": 2,
            "captions": {"unsafe": 224, "safe": 256},
        },
        "bench": {"steps_per_call": 3},
        "precompute_seconds": 10.0,
        "step_seconds": {"cached": stats(1.0), "recompute": stats(speedup)},
        "speedup": stats(speedup),
        "recompute_seconds": stats(speedup - 1.0),
    }


def test_target_verdict_and_cause():
    mining = [
        {
            "unsafe": 10,
            "safe": 20,
            "seconds": 0.1,
            "pairs_per_second": 2000.0,
            "input_bytes": 100,
            "extra_peak_rss_bytes": 0,
            "cuda_peak_bytes": None,
        }
    ]
    [met] = tb.to_section(_steps(2.1), mining, {"dim": 768, "chunk": 4096}, "cpu").targets
    assert met.met is True and met.value.startswith("2.10x")
    section = tb.to_section(_steps(1.6), mining, {"dim": 768, "chunk": 4096}, "cpu")
    [missed] = section.targets
    assert missed.met is False and "at most 1.75x" in missed.cause
    # 0.6 s recompute over 48 captions, 1.0 s per step over 32: 1 + 3f/2t = 1 + 0.6 / 1.0
    assert "1.60x" in missed.cause
    assert len(section.tables) == 2 and section.tables[1].rows[0][:2] == [10, 20]
