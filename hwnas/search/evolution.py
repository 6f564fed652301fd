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

import dataclasses
import random
from collections import deque
from dataclasses import dataclass

from ..core.arch import Arch
from ..errors import HwnasError
from ..options import Options, option
from .base import TrialStrategy

POPULATION_HELP = "evolution (default 30) and nsga2 (default 20): population size"


def mutate(space, parent: Arch, rng: random.Random, edits: int = 1) -> Arch:
    """`parent` with `edits` distinct decisions (among those with a choice) each changed to another
    of its choices (the mutation of evolution, and of BANANAS' candidates)."""
    choices = parent.choice_map
    open_decisions = [d for d in space.decisions if len(d.choices) > 1]
    for decision in rng.sample(open_decisions, min(edits, len(open_decisions))):
        choices[decision.name] = rng.choice([c for c in decision.choices if c != choices[decision.name]])
    return Arch.create(space, choices)


@dataclass(frozen=True)
class EvolutionOptions(Options):
    """`sample_size` None: min(10, population)."""

    title = "evolution strategy"
    population: int = option(30, "--population", POPULATION_HELP, type=int)
    sample_size: int | None = option(None, "--sample-size", "evolution: members drawn for each tournament "
                                                            "(default 10)", type=int)

    def __post_init__(self):
        if self.sample_size is None:
            object.__setattr__(self, "sample_size", min(10, self.population))
        if self.population < 2 or not 1 <= self.sample_size <= self.population:
            raise HwnasError(f"--population must be >= 2 and --sample-size in 1..population, got {self.population} "
                             f"and {self.sample_size}")


class EvolutionStrategy(TrialStrategy):
    name = "evolution"
    records = (EvolutionOptions,)

    def __init__(self, options: EvolutionOptions = EvolutionOptions(), **changes):
        """`changes`: fields of `options` to replace (`EvolutionStrategy(population=4)`)."""
        self.options = dataclasses.replace(options, **changes)
        self.population_size, self.sample_size = self.options.population, self.options.sample_size

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
