"""The strategy seam: a search problem, a strategy object that solves it, candidate evaluators,
and the result record every strategy returns (Optuna-style small base classes, passed in)."""

from __future__ import annotations

import argparse
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from ..arch import Arch
from ..data import ImageData
from ..jsonio import atomic_write_json
from ..latency_tables.predictor import LatencyPredictor
from ..spaces import SearchSpace
from .budget import BudgetStep


@dataclass(frozen=True)
class SearchProblem:
    """What to search: a space at the LUT's resolution, its latency predictor, an optional budget
    (ms, already checked feasible), the data, and where and how to run."""

    space: SearchSpace
    predictor: LatencyPredictor
    budget_ms: float | None
    data: ImageData
    run_dir: Path
    seed: int = 0
    resume: bool = False
    progress: bool = True
    lut_source: str = ""


@dataclass(frozen=True)
class Candidate:
    """An architecture a strategy considered, with its predicted latency and a strategy-specific
    score (one-shot supernet top-1 for fbnet's top-k, short-training top-1 for fbnet's finalists and
    random's trials; None if not scored)."""

    arch: Arch
    predicted_ms: float
    score: float | None = None
    log_prob: float | None = None
    budget_steps: tuple[BudgetStep, ...] = ()
    status: str = "complete"  # or "failed" (a failure is a record, not a crash)
    note: str = ""

    def to_dict(self) -> dict:
        return {"arch": self.arch.to_dict(), "hash": self.arch.hash, "predicted_ms": self.predicted_ms,
                "score": self.score, "log_prob": self.log_prob, "budget_steps": [r.to_dict() for r in self.budget_steps],
                "status": self.status, "note": self.note}


@dataclass(frozen=True)
class SearchResult:
    strategy: str
    arch: Arch
    predicted_ms: float
    budget_ms: float | None
    budget_steps: tuple[BudgetStep, ...] = ()
    candidates: tuple[Candidate, ...] = ()
    wall_s: float = 0.0
    finished: bool = True
    details: dict = field(default_factory=dict)

    @property
    def repaired(self) -> bool:
        """The picked architecture exceeded the budget and was downgraded."""
        return any(step.kind == "downgrade" for step in self.budget_steps)

    @property
    def filled(self) -> bool:
        """The picked architecture was well under the budget and was upgraded toward it."""
        return any(step.kind == "upgrade" for step in self.budget_steps)

    def to_dict(self) -> dict:
        return {"strategy": self.strategy, "arch": self.arch.to_dict(), "arch_hash": self.arch.hash,
                "predicted_latency_ms": self.predicted_ms, "budget_ms": self.budget_ms,
                "meets_budget": self.budget_ms is None or self.predicted_ms <= self.budget_ms,
                "repaired": self.repaired, "filled": self.filled, "budget_steps": [r.to_dict() for r in self.budget_steps],
                "candidates": [c.to_dict() for c in self.candidates], "wall_s": round(self.wall_s, 3),
                "finished": self.finished, **self.details}


def write_result(run_dir: Path, result: SearchResult) -> None:
    """arch.json (the best architecture) and result.json (everything else), atomically."""
    atomic_write_json(run_dir / "arch.json", result.arch.to_dict())
    atomic_write_json(run_dir / "result.json", result.to_dict())


class SearchStrategy(ABC):
    """A search strategy: built from its own options, then `search(problem)`.

    `add_arguments` adds the strategy's flags to `hwnas search` (in its own argument group);
    `from_args` builds the strategy from parsed flags. A strategy keeps no global state.
    """

    name: str = ""

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        """Add this strategy's flags (names must not clash with other strategies')."""

    @classmethod
    @abstractmethod
    def from_args(cls, args: argparse.Namespace) -> "SearchStrategy":
        ...

    @abstractmethod
    def search(self, problem: SearchProblem, stop_after: int | None = None) -> SearchResult:
        """Run (or resume) the search in `problem.run_dir`; `stop_after` interrupts it deliberately
        after that many units of work (epochs, trials) so that tests can exercise `--resume`."""


class Evaluator(ABC):
    """Scores one candidate architecture (higher is better)."""

    @abstractmethod
    def evaluate(self, arch: Arch) -> float:
        ...
