"""The alternating measurement loop and the statistics built on it (fake clocks, no real timing)."""

from __future__ import annotations

import pytest

from bench.timing import (
    Clock,
    Sample,
    alternate,
    paired_differences,
    paired_ratios,
    project,
    ratio_of_minima,
    round_order,
    spread,
    step_profile,
)


class FakeClock(Clock):
    """Time advances only when a system says so: each system's cost is exact."""

    def __init__(self):
        super().__init__()
        self.t = 0.0
        self.cpu = 0.0

    def now(self):
        return self.t, self.cpu


def fake_systems(clock: FakeClock, costs: dict[str, float], log: list[str]):
    def make(name):
        def run():
            log.append(name)
            clock.t += costs[name]
            clock.cpu += costs[name] / 2
            return {"name": name}

        return run

    return {name: make(name) for name in costs}


def test_round_order_rotates_so_each_system_leads_once():
    names = ["a", "b", "c"]
    orders = [round_order(names, r) for r in range(3)]
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    assert round_order(names, 3) == names


def test_alternate_interleaves_rounds_and_attributes_each_cost_to_its_system():
    clock, log = FakeClock(), []
    systems = fake_systems(clock, {"plain": 1.0, "safer": 2.0, "sld": 3.0}, log)
    samples = alternate(systems, repeats=4, warmup=1, clock=clock)
    # warm-up round (3 calls, untimed) then 4 rounds of every system once, rotating
    assert len(log) == 3 + 12
    timed = log[3:]
    for r in range(4):
        assert timed[3 * r : 3 * r + 3] == round_order(["plain", "safer", "sld"], r)
    assert [s.wall for s in samples["plain"]] == [1.0] * 4
    assert [s.wall for s in samples["sld"]] == [3.0] * 4
    assert [s.cpu for s in samples["safer"]] == [1.0] * 4
    assert samples["sld"][0].extra == {"name": "sld"}


def test_alternate_rejects_bad_arguments():
    with pytest.raises(ValueError, match="no systems"):
        alternate({}, repeats=1)
    with pytest.raises(ValueError, match="repeats"):
        alternate({"a": lambda: None}, repeats=0)


def test_spread_median_and_quartiles():
    s = spread([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (s["median"], s["q1"], s["q3"], s["min"], s["max"], s["n"]) == (3.0, 2.0, 4.0, 1.0, 5.0, 5)
    one = spread([7.0])
    assert one["q1"] == one["q3"] == one["median"] == 7.0
    with pytest.raises(ValueError):
        spread([])


def _samples(values: dict[str, list[float]]) -> dict[str, list[Sample]]:
    return {name: [Sample(wall=v, cpu=v / 2) for v in vs] for name, vs in values.items()}


def test_paired_ratios_pair_rounds_so_drift_cancels():
    # the machine slows down 10x in round 2; the system is 10% slower than plain in every round
    samples = _samples({"plain": [1.0, 10.0, 1.0], "safer": [1.1, 11.0, 1.1]})
    ratios = paired_ratios(samples, "plain")
    assert ratios["plain"]["median"] == pytest.approx(1.0)
    assert ratios["safer"]["median"] == pytest.approx(1.1)
    assert ratios["safer"]["q1"] == pytest.approx(1.1) and ratios["safer"]["q3"] == pytest.approx(1.1)


def test_paired_ratios_per_image_and_cpu_value():
    samples = _samples({"plain": [2.0, 4.0], "compare": [4.0, 8.0]})
    assert paired_ratios(samples, "plain")["compare"]["median"] == pytest.approx(2.0)
    per_image = paired_ratios(samples, "plain", per_call={"compare": 2})
    assert per_image["compare"]["median"] == pytest.approx(1.0)
    assert paired_ratios(samples, "plain", value=lambda s: s.cpu)["compare"]["median"] == pytest.approx(2.0)


def test_paired_ratios_refuse_unpaired_or_missing_baseline():
    with pytest.raises(ValueError, match="rounds must pair"):
        paired_ratios(_samples({"plain": [1.0, 1.0], "safer": [1.0]}), "plain")
    with pytest.raises(KeyError, match="baseline"):
        paired_ratios(_samples({"safer": [1.0]}), "plain")


def test_paired_differences_and_ratio_of_minima():
    samples = _samples({"plain": [3.0, 1.0], "sld": [4.5, 2.0]})
    diff = paired_differences(samples, "plain")
    assert diff["sld"]["median"] == pytest.approx(1.25)
    assert ratio_of_minima(samples, "plain")["sld"] == pytest.approx(2.0)
    assert ratio_of_minima(samples, "plain", per_call={"sld": 2})["sld"] == pytest.approx(1.0)


def test_step_profile_splits_fixed_and_per_step_time_and_projects():
    # start 10.0: 1.5 s set-up + encoding, three steps of 1 s, then 0.5 s decoding
    stamps = [12.5, 13.5, 14.5]
    profile = step_profile(total=5.0, stamps=stamps, start=10.0)
    assert profile["per_step"] == pytest.approx(1.0)
    assert profile["fixed"] == pytest.approx(2.0)
    assert profile["steps"] == 3
    assert project(profile, 50) == pytest.approx(52.0)
    assert step_profile(1.0, [0.5], 0.0) is None


def test_step_profile_counts_iterations_the_callback_did_not_see():
    # 3 iterations, the callback skipped the first (as SLD's pipeline does for scheduler warm-up iterations)
    profile = step_profile(total=5.0, stamps=[13.5, 14.5], start=10.0, iterations=3)
    assert profile["per_step"] == pytest.approx(1.0)
    assert profile["fixed"] == pytest.approx(2.0)
    assert profile["steps"] == 3
