"""The registries of `hwnas search`: strategies by `--strategy` name, evaluators by `--evaluator`
name, each with the options records it declares (the one place either is listed).

Add a strategy by subclassing `TrialStrategy` or `SupernetStrategy` (base.py) with its `records`
and listing it in STRATEGIES; an evaluator by subclassing `Evaluator` with a `from_options`
classmethod and listing it, with its options record, in EVALUATORS.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import HwnasError
from ..options import Options, record_from
from .bananas import BananasStrategy
from .base import Strategy
from .darts import DARTSStrategy
from .enas import ENASStrategy
from .evaluators import Evaluator, ScratchEvaluator, ScratchOptions
from .evolution import EvolutionStrategy
from .fbnet import FBNetStrategy
from .lamarckian import LemonadeStrategy, NashStrategy
from .local_search import LocalSearchStrategy
from .mnas import MnasStrategy
from .optuna_strategies import NSGA2Strategy, TPEStrategy
from .random_search import RandomStrategy
from .spos import SharedEvaluator, SharedOptions
from .tabular import TabularEvaluator, TabularOptions

STRATEGIES: dict[str, type[Strategy]] = {cls.name: cls for cls in (
    FBNetStrategy, RandomStrategy, EvolutionStrategy, TPEStrategy, NSGA2Strategy, MnasStrategy, ENASStrategy,
    BananasStrategy, LocalSearchStrategy, DARTSStrategy, NashStrategy, LemonadeStrategy)}


@dataclass(frozen=True)
class EvaluatorKind:
    """An evaluator of `--evaluator NAME`: its class (built by `cls.from_options(options, problem)`),
    its options record, and whether it looks candidates up in a benchmark (`tabular`: no --data,
    the benchmark fixes the space and the evaluator is made before the problem)."""

    cls: type[Evaluator]
    options: type[Options]
    tabular: bool = False

    def build(self, options: Options, problem=None) -> Evaluator:
        return self.cls.from_options(options, problem)


EVALUATORS: dict[str, EvaluatorKind] = {
    "scratch": EvaluatorKind(ScratchEvaluator, ScratchOptions),
    "shared": EvaluatorKind(SharedEvaluator, SharedOptions),
    "nb201": EvaluatorKind(TabularEvaluator, TabularOptions, tabular=True),
}


def get_strategy(name: str) -> type[Strategy]:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise HwnasError(f"unknown search strategy {name!r}; choose one of: {', '.join(sorted(STRATEGIES))}") from None


def evaluator_kind(name: str) -> EvaluatorKind:
    try:
        return EVALUATORS[name]
    except KeyError:
        raise HwnasError(f"unknown evaluator {name!r}; choose one of: {', '.join(EVALUATORS)}") from None


def make_evaluator(name: str, problem, epochs: int, batch_size: int, max_batches: int | None = None,
                   **options) -> Evaluator:
    """The evaluator `name` (see registry.EVALUATORS) for a search problem, its options record
    built from the training settings and `options` (those its record declares: e.g. `holdout`,
    `supernet`, `calib_batches`; others are ignored). `scratch` trains each candidate `epochs` on
    1 - `holdout` of the training set and scores it on the rest; `shared` trains a SPOS supernet
    `epochs` (file `supernet`, default RUN_DIR/spos_supernet.pt) and scores on its held-out part."""
    kind = evaluator_kind(name)
    given = {"epochs": epochs, "batch_size": batch_size, "max_batches": max_batches, **options}
    return kind.build(record_from(kind.options, given), problem)
