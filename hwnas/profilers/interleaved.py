"""Time many things against one reference, in interleaved rounds, so that a drifting machine cancels out.

A shared machine changes speed by 20% within minutes. Timing one op to completion, then the
next, gives each op the speed of its own minute; profile, calibration and validation, run at
different times, then disagree by as much as the machine drifted. So every item is timed in
`rounds` rounds; each round visits the items in a new random order (RMIT: randomised
multiple interleaved trials), in segments of `segment_size` items, and a whole reference
network is timed before and after every segment. An item's time in a round is expressed
relative to the reference's local time: the median of the probes of the `reference_window`
segments before and after it (the machine drifts over tens of seconds, a segment takes a
fraction of one, so neighbouring probes track the drift with less of one probe's own noise),
or, where the machine just changed speed, the two probes around the segment alone:

    normalised = round time x R0 / local reference time

A round's time is the fastest of its few back-to-back calls (`round_statistic="min"`): on a
loaded machine a call is lengthened by whatever preempts it, never shortened, so the fastest
call of a round is the least disturbed one, for the item and the reference alike; across
rounds the median is taken. `"median"` uses the median call of the round instead.

where R0 is the reference's time the table is expressed at (the median of its probes when the
table was first profiled). A segment during which the reference changed by more than
`drift_limit` (the machine changed speed under it) is timed again, at most `max_retries` times.

`time_rounds` is the one timing loop of profiling, calibration, validation and the search's
on-device check. It takes plain callables (one call -> its duration in ms), so tests drive it
with a synthetic machine whose speed drifts.
"""

from __future__ import annotations

import math
import random
import statistics as pystats
from dataclasses import asdict, dataclass, replace
from typing import Callable, Mapping, Sequence

from ..errors import ProfileError
from .statistics import median, percentile, relative_ci


ROUND_STATISTICS: dict[str, Callable[[Sequence[float]], float]] = {"min": min, "median": median}


@dataclass(frozen=True)
class RoundsConfig:
    """How many interleaved rounds, how many calls per item and round, and the drift check."""

    rounds: int = 5
    segment_size: int = 8
    warmup_calls: int = 1
    min_calls: int = 3
    max_calls: int = 25
    call_budget_s: float = 0.015  # timed calls per item and round aim at this much time
    reference_calls: int = 3
    drift_limit: float = 0.10
    max_retries: int = 2
    chunk_size: int = 64  # items prepared (sessions open) at a time while profiling
    round_statistic: str = "min"  # a round's time: its fastest call ("min") or its median call
    reference_window: int = 3  # segments on each side whose probes give a segment's local reference time

    def __post_init__(self) -> None:
        checks = [
            (self.rounds >= 1, "rounds must be >= 1"),
            (self.segment_size >= 1, "segment_size must be >= 1"),
            (self.warmup_calls >= 0, "warmup_calls must be >= 0"),
            (1 <= self.min_calls <= self.max_calls, "need 1 <= min_calls <= max_calls"),
            (self.call_budget_s > 0, "call_budget_s must be > 0"),
            (self.reference_calls >= 1, "reference_calls must be >= 1"),
            (self.drift_limit > 0, "drift_limit must be > 0, e.g. 0.1 for 10%"),
            (self.max_retries >= 0, "max_retries must be >= 0"),
            (self.chunk_size >= 1, "chunk_size must be >= 1"),
            (self.reference_window >= 0, "reference_window must be >= 0 (segments on each side)"),
            (self.round_statistic in ROUND_STATISTICS, f"round_statistic must be one of {sorted(ROUND_STATISTICS)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ProfileError(f"bad round settings: {message}")

    @classmethod
    def quick(cls) -> "RoundsConfig":
        """Two short rounds: smoke runs and tests, not a table to ship."""
        return cls(rounds=2, min_calls=2, max_calls=4, call_budget_s=0.002, reference_calls=2, max_retries=1)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RoundRecord:
    """One item in one round: its time (the round statistic of its calls), the calls as timed, and
    the reference's local time around them."""

    time_ms: float
    reference_ms: float
    samples: tuple[float, ...]
    retried: int = 0

    def normalised(self, r0: float) -> float:
        """The round's median at the speed where the reference takes `r0` ms."""
        return self.time_ms * r0 / self.reference_ms

    def to_dict(self) -> dict:
        return {"time_ms": self.time_ms, "reference_ms": self.reference_ms, "samples": list(self.samples),
                "retried": self.retried}

    @classmethod
    def from_dict(cls, data: Mapping) -> "RoundRecord":
        try:
            record = cls(float(data["time_ms"]), float(data["reference_ms"]),
                         tuple(float(v) for v in data["samples"]), int(data.get("retried", 0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ProfileError(f"malformed round record ({exc}); delete the unfinished rounds and profile again") from None
        if not (record.time_ms > 0 and record.reference_ms > 0 and math.isfinite(record.time_ms)
                and math.isfinite(record.reference_ms)):
            raise ProfileError(f"round record with a non-positive time {data}; delete it and profile again")
        return record


def _probe(reference: Callable[[], float], calls: int, statistic: Callable[[Sequence[float]], float]) -> float:
    reference()  # untimed: the reference's caches were just evicted by the items
    return float(statistic([reference() for _ in range(calls)]))


def _time_item(timed: Callable[[], float], calls: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        timed()
    return [float(timed()) for _ in range(calls)]


def _calls_for(timed: Callable[[], float], config: RoundsConfig) -> int:
    """Calls per round for an item, from one untimed-for-the-record call."""
    first = max(float(timed()), 1e-6)
    return int(min(config.max_calls, max(config.min_calls, math.ceil(config.call_budget_s * 1000.0 / first))))


def _local_references(probes: Sequence[tuple[float, float]], window: int, drift_limit: float) -> list[float]:
    """The reference's time around each segment (its probes before and after, in time order): the
    median of the probes of the `window` segments on each side, unless the machine changed speed
    there (the segment's own probes differ from it by more than half the drift limit), then the
    geometric mean of the segment's own two probes."""
    out = []
    for i, (before, after) in enumerate(probes):
        near = [p for pair in probes[max(0, i - window):i + window + 1] for p in pair]
        pair, smooth = math.sqrt(before * after), median(near)
        out.append(smooth if abs(math.log(pair / smooth)) <= math.log1p(drift_limit / 2) else pair)
    return out


def time_rounds(items: Mapping[str, Callable[[], float]], reference: Callable[[], float],
                config: RoundsConfig | None = None, *, seed: int = 0,
                records: Mapping[str, Sequence[RoundRecord]] | None = None,
                on_segment: Callable[[dict[str, list[RoundRecord]]], None] | None = None,
                progress: Callable[[int], None] | None = None) -> dict[str, list[RoundRecord]]:
    """Time every item until it has `config.rounds` rounds (records already there count), in
    shuffled interleaved rounds with the reference probed around each segment; `on_segment` is
    called with all records after every segment (checkpoints), `progress` with the rounds done."""
    config = config or RoundsConfig()
    done = {key: list((records or {}).get(key, ())) for key in items}
    rng = random.Random(seed)
    statistic = ROUND_STATISTICS[config.round_statistic]
    probes: list[tuple[float, float]] = []
    timed: list[list[tuple[str, int]]] = []  # per segment: (item, index of its round record)
    calls: dict[str, int] = {}
    while True:
        pending = sorted(key for key in items if len(done[key]) < config.rounds)
        if not pending:
            break
        rng.shuffle(pending)
        for start in range(0, len(pending), config.segment_size):
            segment = pending[start:start + config.segment_size]
            for key in segment:
                if key not in calls:
                    calls[key] = _calls_for(items[key], config)
            for attempt in range(config.max_retries + 1):
                before = _probe(reference, config.reference_calls, statistic)
                timings = {key: _time_item(items[key], calls[key], config.warmup_calls) for key in segment}
                after = _probe(reference, config.reference_calls, statistic)
                drifted = abs(math.log(after / before)) > math.log1p(config.drift_limit)
                if not drifted:
                    break
            probes.append((before, after))
            local = _local_references(probes[-config.reference_window - 1:], config.reference_window,
                                      config.drift_limit)[-1]  # provisional: only the segments before it
            timed.append([(key, len(done[key])) for key in segment])
            for key in segment:
                samples = timings[key]
                done[key].append(RoundRecord(float(statistic(samples)), local, tuple(samples), attempt))
            if on_segment:
                on_segment(done)
            if progress:
                progress(len(segment))
    # every segment's reference time from the probes on both sides of it, now that they are known
    for segment, local in zip(timed, _local_references(probes, config.reference_window, config.drift_limit)):
        for key, index in segment:
            done[key][index] = replace(done[key][index], reference_ms=local)
    return done


def reference_median(records: Mapping[str, Sequence[RoundRecord]]) -> float:
    """The reference's median local time over every round of every item (R0 of a new table)."""
    values = [r.reference_ms for rounds in records.values() for r in rounds]
    if not values:
        raise ProfileError("no rounds were timed, so the reference has no time yet")
    return median(values)


def summarise(rounds: Sequence[RoundRecord], r0: float) -> dict:
    """Latency fields of a Measurement from an item's rounds, normalised to reference time `r0`:
    p50 (the figure a table predicts with) is the median of the normalised round times (drift
    cancelled round by round); p10/p90, mean and std describe every normalised call (p10 and p90
    widened to include p50 when the round statistic is the fastest call); rel_ci is the relative
    spread of the rounds."""
    if not rounds:
        raise ProfileError("an item without timed rounds cannot be summarised")
    per_round = [r.normalised(r0) for r in rounds]
    calls = sorted(s * r0 / r.reference_ms for r in rounds for s in r.samples)
    p50 = median(per_round)
    p10, p90 = min(percentile(calls, 10), p50), max(percentile(calls, 90), p50)
    ci = relative_ci(per_round) if len(per_round) > 1 else math.inf
    return {
        "p10_ms": p10,
        "p50_ms": p50,
        "p90_ms": p90,
        "mean_ms": sum(calls) / len(calls),
        "std_ms": pystats.stdev(calls) if len(calls) > 1 else 0.0,
        "count": len(calls),
        "rel_ci": round(ci, 5) if math.isfinite(ci) else None,
        "remeasured": sum(r.retried for r in rounds),
    }


def round_spread(rounds: Sequence[RoundRecord], r0: float) -> float:
    """Coefficient of variation of an item's normalised round medians (its run-to-run noise)."""
    values = [r.normalised(r0) for r in rounds]
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return float(pystats.stdev(values) / mean) if mean > 0 else 0.0
