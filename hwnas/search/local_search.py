"""The `local` strategy: local search, i.e. hill climbing over one-edit neighbours with restarts
(White, Nolen, Savani, "Local search is state of the art for NAS benchmarks", 2020).

A climb starts at the best of `init` uniform samples within the budgets (a sample over a budget
is rejected unevaluated and replaced). It then evaluates the current architecture's neighbours
(every architecture with one decision changed) in a random order and moves to the first one that
scores higher (first improvement). A neighbour already evaluated, or the same network as one (a
cell whose changed edge is dead, see encodings.canonical), is not asked again: its recorded score
is used. When no neighbour is better, the current architecture is a local optimum and the search
restarts from the best of `init` new uniform samples. A climb that steps onto an architecture an
earlier climb stood on would end where that one did, so it restarts at once. The state is a
function of the seed and the tells (a resumed run replays them).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

from ..core.arch import Arch
from ..errors import HwnasError
from ..options import Options, option
from .base import TrialStrategy
from .encodings import canonical


@dataclass(frozen=True)
class LocalOptions(Options):
    title = "local strategy"
    init: int = option(10, "--local-init", "local: uniform samples whose best is a climb's starting point "
                                           "(default 10)", type=int)

    def __post_init__(self):
        if self.init < 1:
            raise HwnasError(f"--local-init must be >= 1, got {self.init}")


class LocalSearchStrategy(TrialStrategy):
    name = "local"
    records = (LocalOptions,)

    def __init__(self, options: LocalOptions = LocalOptions(), **changes):
        """`changes`: fields of `options` to replace (`LocalSearchStrategy(init=3)`)."""
        self.options = dataclasses.replace(options, **changes)
        self.init = self.options.init

    def settings(self) -> dict:
        return {"init": self.init, "move": "first improvement"}

    def start(self, space, seed, run_dir, objectives, batch=1) -> None:
        super().start(space, seed, run_dir, objectives, batch)
        self.rng = random.Random(seed)
        self.scores: dict[str, float] = {}  # canonical hash -> objective of told trials (-inf: not scored)
        self.asked: set[str] = set()
        self.current: tuple[Arch, float] | None = None
        self.neighbours: list[Arch] = []
        self.starts: list[Arch] = []  # uniform samples of the current (re)start, awaiting their scores
        self.to_start = self.init
        self.restarts = 0
        self.centres: set[str] = set()  # every architecture a climb has stood on (canonical hashes)

    def ask(self) -> Arch:
        while True:
            if self.current is None:
                if self.to_start > 0:  # a (re)start: uniform samples, the best becomes the current
                    self.to_start -= 1
                    arch = self._uniform()
                    self.starts.append(arch)
                    return self._asked(arch)
                if any(self._key(a) not in self.scores for a in self.starts):
                    return self._asked(self._uniform())  # starts still being evaluated (a batch)
                self._begin_climb()
                continue
            while self.current is not None and self.neighbours:
                arch = self.neighbours.pop()
                key = self._key(arch)
                score = self.scores.get(key)
                if score is None:
                    if key in self.asked:
                        continue  # being evaluated in this batch
                    return self._asked(arch)
                if score > self.current[1]:  # known and better: move without a query
                    self._move(arch, score)
            if self.current is not None:  # no neighbour is better: a local optimum
                self._restart()

    def tell(self, trial) -> None:
        score = float(trial.objective) if trial.state == "complete" and trial.objective is not None else float("-inf")
        self.scores[self._key(trial.arch)] = score
        if trial.state == "infeasible" and any(a.hash == trial.arch.hash for a in self.starts):
            # a start over a budget was not evaluated (no query spent): draw another in its place
            self.starts = [a for a in self.starts if a.hash != trial.arch.hash]
            self.to_start += 1
        if self.current is not None and score > self.current[1] and self._is_neighbour(trial.arch, self.current[0]):
            self._move(trial.arch, score)

    # --- helpers --------------------------------------------------------------------------------
    def _key(self, arch: Arch) -> str:
        return canonical(arch, self.space).hash

    def _asked(self, arch: Arch) -> Arch:
        self.asked.add(self._key(arch))
        return arch

    def _uniform(self) -> Arch:
        return Arch.create(self.space, self.space.sample(self.rng))

    def _begin_climb(self) -> None:
        scored = [(a, self.scores[self._key(a)]) for a in self.starts]
        arch, score = max(scored, key=lambda t: t[1])
        self.starts = []
        self._move(arch, score)

    def _move(self, arch: Arch, score: float) -> None:
        key = self._key(arch)
        if key in self.centres:  # an earlier climb went on from here: this one would end where it did
            self._restart()
            return
        self.centres.add(key)
        self.current = (arch, score)
        self.neighbours = self._neighbourhood(arch)
        self.rng.shuffle(self.neighbours)

    def _restart(self) -> None:
        self.restarts += 1
        self.current, self.neighbours = None, []
        self.to_start = self.init

    def _is_neighbour(self, arch: Arch, of: Arch) -> bool:
        """Whether `arch` is in `of`'s neighbourhood (see `_neighbourhood`), without making it."""
        changed = sum(a != b for (_, a), (_, b) in zip(arch.choices, of.choices))
        return changed == 1 and self._key(arch) != self._key(of)

    def _neighbourhood(self, arch: Arch) -> list[Arch]:
        """Every architecture with exactly one decision changed, in the space's order, less those
        that are the same network as `arch`."""
        choices, key = arch.choice_map, self._key(arch)
        out = []
        for d in self.space.decisions:
            for c in d.choices:
                if c != choices[d.name]:
                    other = Arch.create(self.space, {**choices, d.name: c})
                    if self._key(other) != key:
                        out.append(other)
        return out
