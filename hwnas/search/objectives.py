"""Budgets and objectives of a search: the memory and parameter budgets' parsing, each trial's
relative overshoot per budget, the penalised objective, the Pareto front and its hypervolume,
and the choice of the result (the most accurate front member within every budget)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

from .budget import BudgetError

#: objective name -> (trial field it reads, direction)
OBJECTIVES = {"acc": ("objective", "maximize"), "latency": ("predicted_ms", "minimize"),
              "memory": ("peak_activation_bytes", "minimize")}
BUDGET_MODES = ("reject", "penalise")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$", re.I)
_BYTES = {"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 1024, "mib": 1024 ** 2, "gib": 1024 ** 3}
_COUNT = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}


def _parse(text: str, units: dict, what: str, example: str) -> int:
    match = _SIZE.match(str(text))
    unit = match[2].lower() if match else None
    if not match or unit not in units:
        raise BudgetError(f"{what} {text!r} is not understood; write e.g. {example}")
    value = float(match[1]) * units[unit]
    if not value >= 1:
        raise BudgetError(f"{what} {text!r} must be positive, e.g. {example}")
    return int(value)


def parse_memory_budget(text: str) -> int:
    """'2MB', '512KiB', '300000' (bytes) -> bytes of peak activation memory."""
    return _parse(text, _BYTES, "memory budget", "2MB, 512KiB or 300000 (bytes)")


def parse_params_budget(text: str) -> int:
    """'1.5M', '300k', '250000' -> a parameter count."""
    return _parse(text, _COUNT, "parameter budget", "1.5M, 300k or 250000")


def parse_objectives(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in str(text).split(",") if n.strip())
    if not names or names[0] != "acc" or len(set(names)) != len(names) or not set(names) <= set(OBJECTIVES):
        raise BudgetError(f"--objectives {text!r}: give acc first, then any of latency, memory (e.g. acc,latency)")
    return names


@dataclass(frozen=True)
class Budgets:
    """The budgets a result must meet (None: no budget) and what happens to a candidate over one:
    `reject` (not evaluated, recorded as infeasible) or `penalise` (evaluated, its objective scaled
    by (value / budget) ** -penalty per budget it exceeds, MnasNet's soft constraint)."""

    latency_ms: float | None = None
    memory_bytes: int | None = None
    params: int | None = None
    mode: str = "reject"
    penalty: float = 1.0

    def __post_init__(self):
        if self.mode not in BUDGET_MODES:
            raise BudgetError(f"--budget-mode must be one of {', '.join(BUDGET_MODES)}, got {self.mode!r}")
        if not self.penalty > 0:
            raise BudgetError(f"--penalty must be > 0, got {self.penalty}")

    def names(self) -> list[str]:
        """The budgets given, by name."""
        return [name for name, budget in (("latency", self.latency_ms), ("memory", self.memory_bytes),
                                          ("params", self.params)) if budget is not None]

    def violations(self, predicted_ms: float, peak_bytes: int, params: int) -> dict[str, float]:
        """Relative overshoot per budget given (value / budget - 1; > 0 is over it)."""
        pairs = (("latency", predicted_ms, self.latency_ms), ("memory", peak_bytes, self.memory_bytes),
                 ("params", params, self.params))
        return {name: value / budget - 1.0 for name, value, budget in pairs if budget is not None}

    def penalised(self, score: float, violations: dict[str, float]) -> float:
        factor = 1.0
        for over in violations.values():
            if over > 0:
                factor *= (1.0 + over) ** -self.penalty
        return score * factor

    def to_dict(self) -> dict:
        return {"latency_ms": self.latency_ms, "memory_bytes": self.memory_bytes, "params": self.params,
                "mode": self.mode, "penalty": self.penalty}


def refuse_infeasible_budgets(predictor, memory_bytes: int | None, params: int | None) -> None:
    """A memory or parameter budget below the space's smallest network is refused before the
    search starts (not after thousands of rejected proposals), where the predictor knows that
    minimum exactly."""
    if memory_bytes is None and params is None:
        return
    smallest = predictor.smallest_memory()
    if smallest is None:
        return
    fewest, lowest = smallest
    space = predictor.space.name
    if params is not None and params < fewest:
        raise BudgetError(f"parameter budget {params:,} is infeasible: the smallest network of space {space!r} has "
                          f"{fewest:,} parameters; give --params-budget of at least {fewest:,}")
    if memory_bytes is not None and memory_bytes < lowest:
        raise BudgetError(f"memory budget {memory_bytes:,} bytes is infeasible: every network of space {space!r} "
                          f"peaks at {lowest:,} bytes of activations or more; give --memory-budget of at least "
                          f"{lowest:,}")


def objective_values(trial, objectives: Sequence[str]) -> tuple[float, ...]:
    """The trial's objectives, all turned into 'higher is better' (minimised ones negated); top-1
    itself for acc, not the penalised objective."""
    values = []
    for name in objectives:
        attr, direction = OBJECTIVES[name]
        value = trial.top1 if name == "acc" else float(getattr(trial, attr))
        values.append(value if direction == "maximize" else -value)
    return tuple(values)


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def pareto_front(trials: Sequence, objectives: Sequence[str]) -> list:
    """The complete, feasible trials that no other such trial dominates (one per architecture),
    most accurate first."""
    pool, seen = [], set()
    for t in trials:
        if t.state == "complete" and t.feasible and t.top1 is not None and math.isfinite(t.top1) \
                and t.arch.hash not in seen:
            seen.add(t.arch.hash)
            pool.append(t)
    values = {t.number: objective_values(t, objectives) for t in pool}
    front = [t for t in pool if not any(dominates(values[o.number], values[t.number]) for o in pool)]
    return sorted(front, key=lambda t: (-t.top1, t.number))


def choose(trials: Sequence, objectives: Sequence[str]):
    """The result: the most accurate member of the front (all within the budgets), or None."""
    front = pareto_front(trials, objectives)
    return front[0] if front else None


def hypervolume_2d(points: Sequence[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Area dominated by (accuracy, latency) points (accuracy maximised, latency minimised) and
    bounded by `ref` = (lowest accuracy, highest latency) counted."""
    pts = sorted((lat, acc) for acc, lat in points if acc > ref[0] and lat < ref[1])
    area, best_acc = 0.0, ref[0]
    for i, (lat, acc) in enumerate(pts):
        best_acc = max(best_acc, acc)
        next_lat = pts[i + 1][0] if i + 1 < len(pts) else ref[1]
        area += (next_lat - lat) * (best_acc - ref[0])
    return area
