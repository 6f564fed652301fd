"""The strategy seam: a search problem, the strategy base classes (a trial strategy proposes and
learns by ask/tell; a supernet strategy runs its own search), and the result record every
strategy returns, written by `write_result` (Optuna-style small base classes, passed in)."""

from __future__ import annotations

import argparse
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from ..core.arch import Arch
from ..train.data import ImageData
from ..errors import HwnasError
from ..jsonio import atomic_write_json
from ..latency_tables.predictor import LatencyPredictor
from ..options import Options
from ..core.spaces import SearchSpace
from .budget import BudgetStep
from .objectives import Budgets


@dataclass(frozen=True)
class SearchProblem:
    """What to search: a space at the LUT's resolution, its latency predictor, an optional latency
    budget (ms, already checked feasible), the data (None for a tabular evaluator), where and how to run, the other budgets
    (peak activation bytes, parameters) with what to do about a candidate over one, and the
    objectives (`acc` first; `latency`, `memory` make the run multi-objective)."""

    space: SearchSpace
    predictor: LatencyPredictor
    budget_ms: float | None
    data: ImageData | None
    run_dir: Path
    seed: int = 0
    resume: bool = False
    progress: bool = True
    lut_source: str = ""
    memory_budget: int | None = None
    params_budget: int | None = None
    budget_mode: str = "reject"
    penalty: float = 1.0
    objectives: tuple[str, ...] = ("acc",)
    task_head: str | None = None  # the task model budgeted (`--task-head`), e.g. "fasterrcnn, 2 classes"

    @property
    def budgets(self) -> Budgets:
        return Budgets(self.budget_ms, self.memory_budget, self.params_budget, self.budget_mode, self.penalty)


@dataclass(frozen=True)
class Candidate:
    """An architecture a strategy considered, with its predicted latency and a strategy-specific
    score (one-shot supernet top-1 for fbnet's top-k, short-training top-1 for fbnet's finalists,
    the evaluator's top-1 for a sampler's Pareto front members; None if not scored)."""

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
    #: a search over several devices: per device its table, predicted latency, budget, whether met
    #: (`predicted_ms` and `budget_ms` are then the first budgeted device's)
    devices: tuple[dict, ...] = ()

    @property
    def meets_budget(self) -> bool:
        """Every budget is met by prediction."""
        if self.devices:
            return all(d["meets_budget"] is not False for d in self.devices)
        return self.budget_ms is None or self.predicted_ms <= self.budget_ms * (1 + 1e-9)

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
                "meets_budget": self.meets_budget, **({"devices": list(self.devices)} if self.devices else {}),
                "repaired": self.repaired, "filled": self.filled, "budget_steps": [r.to_dict() for r in self.budget_steps],
                "candidates": [c.to_dict() for c in self.candidates], "wall_s": round(self.wall_s, 3),
                "finished": self.finished, **self.details}


def write_result(run_dir: Path, result: SearchResult) -> None:
    """arch.json (the best architecture) and result.json (everything else), atomically: the one
    place a search's result is written (run_search calls it after the strategy has picked)."""
    atomic_write_json(run_dir / "arch.json", result.arch.to_dict())
    atomic_write_json(run_dir / "result.json", result.to_dict())


class Strategy:
    """What every strategy shares: a registry name and its options, declared once.

    `records` are the options records (`hwnas.options.Options`) the constructor takes, in order:
    their flags are the strategy's own, `from_args` builds them from the command line, and
    `hwnas search` refuses any declared flag that neither they nor (for a strategy that uses an
    evaluator) the trial loop's and the evaluator's records declare.
    """

    name: str = ""
    uses_evaluator: bool = True
    records: ClassVar[tuple[type[Options], ...]] = ()

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Strategy":
        """The strategy of the parsed flags; the records' defaults for flags not given (an empty
        Namespace gives the defaults)."""
        return cls(*(record.from_args(args) for record in cls.records))

    def settings(self) -> dict:
        """The strategy's own settings, kept with the run (a resumed run must have the same)."""
        return {}


@dataclass(frozen=True)
class Lineage:
    """Where a Lamarckian strategy's candidate comes from: its parent trial (None: trained from
    scratch), the network morphisms applied (hwnas.core.morphisms, as text), whether all are exact,
    and the weights files, relative to the run directory: the parent's trained weights it inherits
    (`parent_weights`) and where its own trained weights go (`weights`, for its children)."""

    parent: int | None
    parent_hash: str | None
    morphisms: tuple[str, ...] = ()
    exact: bool = True
    parent_weights: str | None = None
    weights: str = ""

    def to_dict(self) -> dict:
        return {"parent": self.parent, "parent_hash": self.parent_hash, "morphisms": list(self.morphisms),
                "exact": self.exact, "parent_weights": self.parent_weights, "weights": self.weights}


class TrialStrategy(Strategy, ABC):
    """A strategy that proposes and learns, driven by the trial loop (Optuna-sampler-like):
    `start` once per run (a fresh state from the seed), then `ask()` for a proposal and
    `tell(trial)` with its outcome, in the loop's order. Replaying the tells of a history into a
    freshly started strategy of the same seed reproduces its state: that is how a run resumes.
    """

    #: set by the trial loop in reject mode: arch -> within every budget by prediction (cheap, no
    #: evaluation); a strategy may use it to rank or sample only candidates the loop will evaluate
    feasible = None

    def start(self, space: SearchSpace, seed: int, run_dir: Path, objectives: tuple[str, ...], batch: int = 1) -> None:
        """`batch`: proposals the loop asks before it tells any of them (parallel evaluation)."""
        self.space, self.seed, self.run_dir, self.objectives, self.batch = space, seed, run_dir, objectives, batch

    def sample_feasible(self, rng, draws: int = 1000) -> Arch:
        """A uniform sample of the space; within the budgets when the loop says which are
        (`feasible`), drawing at most `draws` times (the last draw is returned if none is)."""
        arch = Arch.create(self.space, self.space.sample(rng))
        for _ in range(draws if self.feasible else 0):
            if self.feasible(arch):
                break
            arch = Arch.create(self.space, self.space.sample(rng))
        return arch

    @abstractmethod
    def ask(self) -> Arch:
        ...

    @abstractmethod
    def tell(self, trial) -> None:
        ...

    def lineage(self, arch: Arch) -> Lineage | None:
        """For a Lamarckian strategy, the lineage of the architecture just asked (the loop records it
        with the trial and hands its weights files to the evaluator); None for the others."""
        return None


class SupernetStrategy(Strategy, ABC):
    """A strategy of its own kind (FBNet): trains a supernet and derives its result from it, with
    its own checkpoint; `run_search` writes the result it returns."""

    @abstractmethod
    def search(self, problem: SearchProblem, stop_after: int | None = None) -> SearchResult:
        """Run (or resume) the search in `problem.run_dir`; `stop_after` interrupts it deliberately
        after that many epochs so that tests can exercise `--resume`."""


def refuse_unused_budgets(problem: SearchProblem, strategy: Strategy) -> None:
    if problem.memory_budget is not None or problem.params_budget is not None or problem.objectives != ("acc",):
        raise HwnasError(f"--strategy {strategy.name} handles only --latency-budget and the acc objective; "
                         f"use a sampler strategy (random, evolution, tpe, nsga2) for the others")
