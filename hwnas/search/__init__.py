"""Search strategies behind `hwnas search --strategy NAME`, the trial loop that drives them, and
the evaluators that score candidates: plain registries of classes.

Add a strategy by subclassing `TrialStrategy` (ask/tell, see base.py) or `SupernetStrategy` and
listing it in registry.STRATEGIES; an evaluator by subclassing `Evaluator` (evaluators.py) and
listing it, with its options record, in registry.EVALUATORS.
"""

from __future__ import annotations

from .base import (Candidate, SearchProblem, SearchResult, Strategy, SupernetStrategy, TrialStrategy,
                   write_result)
from .budget import BudgetError, BudgetSpec, parse_budget, repair_to_budget, resolve_budget, top_k_choices
from .evaluators import EvalOutcome, EvalRequest, Evaluator, ScratchEvaluator, SyntheticEvaluator
from .bananas import BananasStrategy
from .darts import DARTSConfig, DARTSStrategy
from .enas import ENASConfig, ENASStrategy
from .evolution import EvolutionStrategy
from .fbnet import FBNetConfig, FBNetStrategy
from .lamarckian import LemonadeStrategy, NashStrategy
from .local_search import LocalSearchStrategy
from .loop import LoopConfig, run_search
from .mnas import MnasStrategy
from .objectives import Budgets, pareto_front
from .optuna_strategies import NSGA2Strategy, TPEStrategy
from .random_search import RandomStrategy
from .registry import EVALUATORS, STRATEGIES, EvaluatorKind, evaluator_kind, get_strategy
from .trials import Trial, read_history


__all__ = [
    "EVALUATORS", "STRATEGIES", "EvaluatorKind", "BananasStrategy", "BudgetError", "BudgetSpec", "Budgets", "Candidate",
    "DARTSConfig", "DARTSStrategy", "ENASConfig", "ENASStrategy", "EvalOutcome", "EvalRequest", "Evaluator",
    "EvolutionStrategy", "FBNetConfig", "FBNetStrategy", "LemonadeStrategy", "LocalSearchStrategy", "LoopConfig",
    "MnasStrategy", "NashStrategy", "NSGA2Strategy", "RandomStrategy",
    "ScratchEvaluator", "SearchProblem", "SearchResult", "Strategy", "SupernetStrategy", "SyntheticEvaluator",
    "TPEStrategy", "Trial", "TrialStrategy", "evaluator_kind", "get_strategy", "pareto_front", "parse_budget", "read_history",
    "repair_to_budget", "resolve_budget", "run_search", "top_k_choices", "write_result",
]
