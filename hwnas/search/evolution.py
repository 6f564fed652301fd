"""The `evolution` strategy: regularized (aging) evolution (Real et al., AAAI 2019).

The first `population` proposals are uniform samples; after that each proposal is a copy of the
best of `sample_size` members drawn at random from the population, with one decision changed to
another of its choices. Every evaluated, feasible trial joins the population and the oldest member
leaves it (aging, not the worst: no lucky score lives forever). Real et al. used 100 and 25 over
20,000 trials; the defaults here, 30 and 10, suit searches of 50 to 500 trials (at 100 trials a
population of 100 would never mutate: it would be random search). On NAS-Bench-201 (CIFAR-10,
benchmarks/nas_bench.py) 30/10 ended at least as well as 20/5 at 50, 100 and 500 trials.
"""

from __future__ import annotations

import argparse
import random
from collections import deque

from ..arch import Arch
from ..errors import HwnasError
from .base import TrialStrategy


def mutate(space, parent: Arch, rng: random.Random, edits: int = 1) -> Arch:
    """`parent` with `edits` distinct decisions (among those with a choice) each changed to another
    of its choices (the mutation of evolution, and of BANANAS' candidates)."""
    choices = parent.choice_map
    open_decisions = [d for d in space.decisions if len(d.choices) > 1]
    for decision in rng.sample(open_decisions, min(edits, len(open_decisions))):
        choices[decision.name] = rng.choice([c for c in decision.choices if c != choices[decision.name]])
    return Arch.create(space, choices)


class EvolutionStrategy(TrialStrategy):
    name = "evolution"
    shared_options = TrialStrategy.shared_options | {"population"}

    def __init__(self, population: int = 30, sample_size: int = 10):
        if population < 2 or not 1 <= sample_size <= population:
            raise HwnasError(f"--population must be >= 2 and --sample-size in 1..population, got {population} "
                             f"and {sample_size}")
        self.population_size, self.sample_size = population, sample_size

    @classmethod
    def add_arguments(cls, group) -> None:
        group.add_argument("--sample-size", type=int, default=argparse.SUPPRESS,
                           help="evolution: members drawn for each tournament (default 10)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "EvolutionStrategy":
        population = getattr(args, "population", 30)
        return cls(population, getattr(args, "sample_size", min(10, population)))

    def settings(self) -> dict:
        return {"population": self.population_size, "sample_size": self.sample_size}

    def start(self, space, seed, run_dir, objectives, batch=1) -> None:
        super().start(space, seed, run_dir, objectives, batch)
        self.rng = random.Random(seed)
        self.population: deque[tuple[Arch, float]] = deque()

    def ask(self) -> Arch:
        if len(self.population) < self.population_size:
            return Arch.create(self.space, self.space.sample(self.rng))
        contenders = self.rng.sample(list(self.population), self.sample_size)
        parent = max(contenders, key=lambda member: member[1])[0]
        return self.mutate(parent)

    def mutate(self, parent: Arch) -> Arch:
        """`parent` with one decision (among those with a choice) changed to another choice."""
        return mutate(self.space, parent, self.rng)

    def tell(self, trial) -> None:
        if trial.state == "complete" and trial.objective is not None:
            self.population.append((trial.arch, trial.objective))
            if len(self.population) > self.population_size:
                self.population.popleft()
