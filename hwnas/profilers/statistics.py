"""How long to time an op: warm-up, then rounds of timed calls until the median is stable.

Stopping rule (`measure_adaptive`): after each round of `round_size` calls, the samples kept so
far give a distribution-free confidence interval of the median (order statistics, normal
approximation of the binomial ranks). Timing stops as soon as

  * at least `min_repeats` samples are kept and the interval's half-width is at most
    `target_rel_ci` of the median ("stable"), or
  * `max_repeats` samples are kept ("max_repeats"), or
  * `max_time_s` seconds of timing have passed ("time_cap"; a round is cut short by it).

Load bursts: a round whose median is more than `outlier_ratio` times the median of all round
medians was disturbed (another process took the core). It is dropped and timed again, at most
`max_dropped_rounds` times per op. (Profiling tables times ops in interleaved rounds instead:
hwnas.profilers.interleaved; this loop times a single call site, e.g. the backend's overhead.)

`timed` is any function that makes one call and returns its duration in milliseconds, and
`clock` any monotonic clock in seconds: tests pass fakes to check the rule exactly.
"""

from __future__ import annotations

import math
import statistics as pystats
import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

from ..errors import ProfileError

_Z = {0.9: 1.6449, 0.95: 1.9600, 0.99: 2.5758}


@dataclass(frozen=True)
class StatsConfig:
    """Repeat and stopping settings of one op's timing (defaults suit CPU ops of 0.01-20 ms)."""

    warmup_calls: int = 3
    warmup_s: float = 0.05
    round_size: int = 10
    min_repeats: int = 30
    max_repeats: int = 500
    target_rel_ci: float = 0.02
    confidence: float = 0.95
    max_time_s: float = 1.0
    outlier_ratio: float = 1.3
    max_dropped_rounds: int = 4

    def __post_init__(self) -> None:
        checks = [
            (self.warmup_calls >= 1, "warmup_calls must be >= 1 (the first call allocates)"),
            (self.warmup_s >= 0, "warmup_s must be >= 0"),
            (self.round_size >= 1, "round_size must be >= 1"),
            (self.min_repeats >= 1, "min_repeats must be >= 1"),
            (self.max_repeats >= self.min_repeats, "max_repeats must be >= min_repeats"),
            (0 < self.target_rel_ci < 1, "target_rel_ci must be in (0, 1), e.g. 0.02 for 2%"),
            (self.confidence in _Z, f"confidence must be one of {sorted(_Z)}"),
            (self.max_time_s > 0, "max_time_s (time cap per op) must be > 0"),
            (self.outlier_ratio > 1, "outlier_ratio must be > 1"),
            (self.max_dropped_rounds >= 0, "max_dropped_rounds must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ProfileError(f"bad statistics settings: {message}")

    @classmethod
    def quick(cls) -> "StatsConfig":
        """Few repeats and a short cap: for smoke runs and tests, not for a table you ship."""
        return cls(warmup_calls=1, warmup_s=0.0, round_size=5, min_repeats=5, max_repeats=15,
                   target_rel_ci=0.1, max_time_s=0.1, max_dropped_rounds=2)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Stats:
    """The samples kept for one op (ms) and why timing stopped."""

    samples: tuple[float, ...]
    rel_ci: float
    stop_reason: str
    rounds_dropped: int = 0

    def summary(self) -> dict:
        """p10/p50/p90/mean/std (ms) and count, the latency fields of a Measurement."""
        data = sorted(self.samples)
        n = len(data)
        return {
            "p10_ms": percentile(data, 10),
            "p50_ms": percentile(data, 50),
            "p90_ms": percentile(data, 90),
            "mean_ms": sum(data) / n,
            "std_ms": pystats.stdev(data) if n > 1 else 0.0,
            "count": n,
        }


def percentile(sorted_data: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default) of already sorted data."""
    if not sorted_data:
        raise ValueError("percentile of no data")
    pos = (len(sorted_data) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_data[lo] + (sorted_data[hi] - sorted_data[lo]) * (pos - lo)


def median_ci(sorted_data: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free confidence interval of the median: order statistics at the ranks
    n/2 -+ z*sqrt(n)/2 (1-based, clamped to the data)."""
    n = len(sorted_data)
    half = _Z[confidence] * math.sqrt(n) / 2
    lo = max(1, math.floor(n / 2 - half))
    hi = min(n, math.ceil(1 + n / 2 + half))
    return sorted_data[lo - 1], sorted_data[hi - 1]


def relative_ci(samples: Sequence[float], confidence: float = 0.95) -> float:
    """Half-width of the median's confidence interval divided by the median (inf if unusable)."""
    data = sorted(samples)
    if len(data) < 2:
        return math.inf
    med = percentile(data, 50)
    lo, hi = median_ci(data, confidence)
    return (hi - lo) / (2 * med) if med > 0 else math.inf


def median(values: Sequence[float]) -> float:
    return pystats.median(values)


def _drop_disturbed(rounds: list[list[float]], ratio: float, budget: int) -> int:
    """Drop (in place) up to `budget` rounds whose median exceeds `ratio` x the median of all
    round medians; the slowest go first. Needs 3 rounds for a reference. Returns the count."""
    if budget <= 0 or len(rounds) < 3:
        return 0
    reference = median([median(r) for r in rounds])
    slow = sorted((r for r in rounds if median(r) > ratio * reference), key=median, reverse=True)
    for r in slow[:budget]:
        rounds.remove(r)
    return min(len(slow), budget)


def measure_adaptive(timed: Callable[[], float], config: StatsConfig | None = None,
                     clock: Callable[[], float] = time.perf_counter) -> Stats:
    """Warm up, then time rounds of calls until the stopping rule of the module docstring holds."""
    config = config or StatsConfig()
    start = clock()
    calls = 0
    while calls < config.warmup_calls or clock() - start < config.warmup_s:
        timed()
        calls += 1

    rounds: list[list[float]] = []
    dropped = 0
    start = clock()
    while True:
        kept_before = sum(len(r) for r in rounds)
        current: list[float] = []
        for _ in range(config.round_size):
            current.append(float(timed()))
            if clock() - start >= config.max_time_s and kept_before + len(current) >= 2:
                break
        rounds.append(current)
        dropped += _drop_disturbed(rounds, config.outlier_ratio, config.max_dropped_rounds - dropped)
        kept = [s for r in rounds for s in r]
        rel = relative_ci(kept, config.confidence)
        if len(kept) >= config.min_repeats and rel <= config.target_rel_ci:
            reason = "stable"
        elif len(kept) >= config.max_repeats:
            reason = "max_repeats"
        elif clock() - start >= config.max_time_s and len(kept) >= 2:
            reason = "time_cap"
        else:
            continue
        return Stats(samples=tuple(kept), rel_ci=rel, stop_reason=reason, rounds_dropped=dropped)
