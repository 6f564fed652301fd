"""The adaptive repeat loop and the load guard, driven by scripted durations and a fake clock."""

import itertools

import numpy as np
import pytest

from hwnas.errors import ProfileError
from hwnas.profilers.statistics import (
    Stats,
    StatsConfig,
    measure_adaptive,
    median_ci,
    percentile,
    relative_ci,
)


class FakeOp:
    """Returns scripted durations (ms); its clock advances by exactly those durations."""

    def __init__(self, durations):
        self.durations = iter(durations)
        self.now = 0.0
        self.calls = 0

    def timed(self) -> float:
        value = next(self.durations)
        self.now += value / 1000
        self.calls += 1
        return value

    def clock(self) -> float:
        return self.now


def run(durations, **config):
    op = FakeOp(durations)
    cfg = StatsConfig(**{"warmup_calls": 2, "warmup_s": 0.0, **config})
    return measure_adaptive(op.timed, cfg, clock=op.clock), op


def test_percentiles_match_numpy():
    data = sorted(np.random.default_rng(0).exponential(1.0, 37).tolist())
    for q in (10, 50, 90):
        assert percentile(data, q) == pytest.approx(np.percentile(data, q))


def test_median_ci_uses_order_statistics():
    data = [float(i) for i in range(1, 31)]
    assert median_ci(data) == (9.0, 22.0)  # ranks 15 -+ 1.96*sqrt(30)/2
    assert relative_ci(data) == pytest.approx((22 - 9) / 2 / 15.5)
    assert relative_ci([1.0]) == float("inf")


def test_summary_fields():
    stats = Stats(samples=(1.0, 2.0, 3.0, 4.0, 10.0), rel_ci=0.1, stop_reason="stable")
    s = stats.summary()
    assert s["p50_ms"] == 3.0 and s["count"] == 5 and s["mean_ms"] == 4.0
    assert s["p10_ms"] == pytest.approx(1.4) and s["p90_ms"] == pytest.approx(7.6)
    assert s["std_ms"] == pytest.approx(np.std([1, 2, 3, 4, 10], ddof=1))


def test_constant_op_stops_stable_at_min_repeats():
    stats, op = run(itertools.repeat(1.0), min_repeats=30, round_size=10)
    assert stats.stop_reason == "stable"
    assert len(stats.samples) == 30 and stats.rel_ci == 0.0
    assert op.calls == 2 + 30  # warm-up calls are not kept


def test_noisy_op_stops_at_max_repeats():
    stats, _ = run(itertools.cycle([1.0, 2.0]), min_repeats=10, max_repeats=60, round_size=10, max_time_s=100)
    assert stats.stop_reason == "max_repeats"
    assert len(stats.samples) == 60
    assert stats.rel_ci > 0.02


def test_time_cap_stops_a_slow_unstable_op():
    stats, op = run(itertools.cycle([100.0, 150.0]), min_repeats=30, round_size=10, max_time_s=0.5)
    assert stats.stop_reason == "time_cap"
    assert 2 <= len(stats.samples) <= 5  # the cap cuts the round short
    assert op.now <= 0.25 + 0.5 + 0.15  # warm-up + cap + at most one call over


def test_warm_up_runs_for_warmup_s():
    op = FakeOp(itertools.repeat(2.0))
    measure_adaptive(op.timed, StatsConfig(warmup_calls=1, warmup_s=0.021, min_repeats=10, round_size=10), clock=op.clock)
    assert op.calls == 11 + 10


def test_a_burst_round_is_dropped_and_re_measured():
    durations = [1.0] * 2 + [1.0] * 10 + [5.0] * 10 + [1.0] * 100
    stats, _ = run(durations, min_repeats=30, round_size=10)
    assert stats.rounds_dropped == 1
    assert max(stats.samples) == 1.0 and stats.summary()["p90_ms"] == 1.0
    assert len(stats.samples) == 30


def test_a_burst_in_the_first_round_is_dropped_once_a_reference_exists():
    durations = [1.0, 1.0] + [3.0] * 10 + [1.0] * 100
    stats, _ = run(durations, min_repeats=20, round_size=10)
    assert stats.rounds_dropped == 1 and max(stats.samples) == 1.0


def test_dropping_is_bounded():
    # every other round is slow: at most max_dropped_rounds are thrown away
    rounds = itertools.cycle([[1.0] * 10, [4.0] * 10])
    durations = itertools.chain([1.0, 1.0], itertools.chain.from_iterable(rounds))
    stats, _ = run(durations, min_repeats=50, max_repeats=80, round_size=10, max_dropped_rounds=2, max_time_s=100)
    assert stats.rounds_dropped == 2 and 4.0 in stats.samples


def test_fast_outliers_are_not_load():
    durations = [2.0, 2.0] + [2.0] * 10 + [1.0] * 10 + [2.0] * 100
    stats, _ = run(durations, min_repeats=30, round_size=10, target_rel_ci=0.9)
    assert stats.rounds_dropped == 0


@pytest.mark.parametrize(
    "bad",
    [
        dict(warmup_calls=0),
        dict(round_size=0),
        dict(min_repeats=0),
        dict(min_repeats=10, max_repeats=5),
        dict(target_rel_ci=0),
        dict(target_rel_ci=1.5),
        dict(confidence=0.5),
        dict(max_time_s=0),
        dict(outlier_ratio=1.0),
        dict(max_dropped_rounds=-1),
    ],
)
def test_bad_settings_are_refused(bad):
    with pytest.raises(ProfileError, match="bad statistics settings"):
        StatsConfig(**bad)


def test_quick_settings_are_valid_and_small():
    quick = StatsConfig.quick()
    assert quick.max_repeats <= 20 and quick.max_time_s <= 0.1
