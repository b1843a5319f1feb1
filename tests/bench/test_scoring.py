"""The evaluation benchmark on tiny models: photographs, NudeNet timing, the runner's timing hooks, the target."""

from __future__ import annotations

import statistics

import pytest

from bench import scoring as sb


def test_photographs_are_rgb_at_the_asked_size():
    images = sb.photographs(10, 64)
    assert len(images) == 10
    assert all(im.mode == "RGB" and im.size == (64, 64) for im in images)
    assert images[0] is images[len(sb.PHOTOS)]  # cycled


@pytest.fixture(scope="module")
def quick_run():
    cfg = sb.default_config(quick=True)
    return cfg, sb.measure_throughput(cfg), sb.measure_eval_run(cfg)


def test_throughput_and_eval_run_measurements(quick_run):
    cfg, throughput, run = quick_run
    assert set(throughput["images_per_second"]) == {"batched", "one at a time"}
    assert throughput["images_per_second"]["batched"]["median"] > 0
    assert throughput["info"]["inference_resolution"] == 320
    assert run["images"] == cfg.prompts
    for timing in run["runs"]["nudenet"] + run["runs"]["no scoring"]:
        # every batch went through the worker's hand-over; waits fit inside the loop
        assert timing["batches"] == cfg.prompts // cfg.batch_size
        assert timing["blocked_s"] + timing["tail_s"] <= timing["wall_s"]
    # the summary figures are medians over the rounds: waiting = (blocked + tail) / wall of the NudeNet runs;
    # overhead = wall with NudeNet / wall without - 1, round by round
    nude, plain = run["runs"]["nudenet"], run["runs"]["no scoring"]
    assert len(nude) == len(plain) == cfg.run_rounds
    waiting = statistics.median((t["blocked_s"] + t["tail_s"]) / t["wall_s"] for t in nude)
    overhead = statistics.median(a["wall_s"] / b["wall_s"] - 1 for a, b in zip(nude, plain, strict=True))
    assert run["waiting_share"]["median"] == pytest.approx(waiting)
    assert run["wall_overhead"]["median"] == pytest.approx(overhead)


def test_section_states_the_target(quick_run):
    cfg, throughput, run = quick_run
    section = sb.to_section(cfg, throughput, run)
    [target] = section.targets
    assert target.target == "<= 5%"
    assert target.met == (max(run["wall_overhead"]["median"], run["waiting_share"]["median"]) <= 0.05)
    if not target.met:
        assert "tiny models" in target.cause
    assert len(section.tables) == 2
