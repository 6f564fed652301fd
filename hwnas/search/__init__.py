"""Search strategies behind `hwnas search --strategy NAME`: a plain registry of strategy classes.

Add a strategy by subclassing `SearchStrategy` (see base.py) and listing it in STRATEGIES.
"""

from __future__ import annotations

from ..errors import HwnasError
from .base import Candidate, Evaluator, SearchProblem, SearchResult, SearchStrategy
from .budget import BudgetError, BudgetSpec, parse_budget, repair_to_budget, resolve_budget, top_k_choices
from .fbnet import FBNetConfig, FBNetStrategy
from .random_search import RandomConfig, RandomStrategy

STRATEGIES: dict[str, type[SearchStrategy]] = {"fbnet": FBNetStrategy, "random": RandomStrategy}


def get_strategy(name: str) -> type[SearchStrategy]:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise HwnasError(f"unknown search strategy {name!r}; choose one of: {', '.join(sorted(STRATEGIES))}") from None


__all__ = [
    "STRATEGIES", "BudgetError", "BudgetSpec", "Candidate", "Evaluator", "FBNetConfig", "FBNetStrategy",
    "RandomConfig", "RandomStrategy", "SearchProblem", "SearchResult", "SearchStrategy", "get_strategy",
    "parse_budget", "repair_to_budget", "resolve_budget", "top_k_choices",
]
