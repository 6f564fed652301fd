"""Lamarckian strategies: children inherit their parent's trained weights through network morphisms
(hwnas.core.morphisms), so each needs only a short training.

- `nash` (Elsken, Metzen & Hutter, "Simple and efficient architecture search for CNNs", 2017): hill
  climbing. The first trial is a small network (`small_start`) trained from scratch; each round
  makes `--nash-children` children of the current network by `--morphisms` random exact morphisms,
  trains each from the inherited weights (one cosine cycle from the full learning rate: a warm
  restart, SGDR), and moves to the best of the round and the current network.
- `lemonade` (Elsken, Metzen & Hutter, "Efficient multi-objective neural architecture search via
  Lamarckian evolution", ICLR 2019): a Pareto front over top-1, predicted latency and parameters
  (peak activation memory when `memory` is an objective). Each generation draws
  `--lemonade-children` parents from the front with probability inverse to the density of their
  cheap objectives (a Gaussian kernel density estimate on log latency and log parameters), makes
  one child of each by `--morphisms` random morphisms (exact or approximate: LEMONADE also shrinks),
  and trains only `--lemonade-accept` of them, chosen with probability inverse to the density of
  their cheap objectives among the front and the other children (sparse regions first). The first
  `--lemonade-init` networks are the small start and its exact growths, trained from scratch.

Both are trial strategies on the ask/tell seam: `ask()` returns the child, `lineage()` tells the
loop its parent, morphisms and weights files (RUN_DIR/weights/HASH.pt), which the loop records with
the trial and hands to the evaluator (EvalRequest.parent_weights / weights_out). Children over a
budget by prediction are not trained: nash draws up to 20 children for one within the budgets (and
when none is, its climb has reached the budget: it starts another from a random network within it);
lemonade never proposes one. `--trials` counts trained children.
The state is a function of the seed and the tells, so a resumed run replays to the same search.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass

import numpy as np

from ..core.arch import Arch
from ..core.morphisms import apply_morphisms, has_morphisms, small_start
from ..errors import HwnasError
from ..options import Options, option
from .base import Lineage, TrialStrategy
from .objectives import dominates

WEIGHTS_DIR = "weights"
MORPHISMS_HELP = "nash (default 5) and lemonade (default 1): random network morphisms applied to make a child"
FEASIBLE_DRAWS = 20


def weights_file(arch: Arch) -> str:
    """Where a candidate's trained weights go, relative to the run directory (one file per network)."""
    return f"{WEIGHTS_DIR}/{arch.hash}.pt"


def _check_space(space, name: str) -> None:
    if not has_morphisms(space):
        raise HwnasError(f"--strategy {name} grows networks by morphisms, which space {space.name!r} has none of; "
                         "use a timm space (tiny, fbnet, mnasnet, mobilenetv3, proxylessnas) or another strategy")


class _Lamarckian(TrialStrategy):
    """What nash and lemonade share: the lineage of what they ask, and children within the budgets."""

    #: children inherit weights: the evaluator must train from them (--evaluator scratch)
    lamarckian = True
    #: set by the trial loop: arch -> its prediction (latency_ms, params, peak_activation_bytes)
    predict = None

    def start(self, space, seed, run_dir, objectives, batch=1) -> None:
        _check_space(space, self.name)
        super().start(space, seed, run_dir, objectives, batch)
        self.rng = random.Random(seed)
        self._lineage: dict[str, Lineage] = {}

    def lineage(self, arch: Arch) -> Lineage | None:
        return self._lineage.get(arch.hash)

    def _from_scratch(self, arch: Arch) -> Arch:
        self._lineage[arch.hash] = Lineage(None, None, weights=weights_file(arch))
        return arch

    def _child(self, parent, morphisms: int, exact_only: bool, draws: int = FEASIBLE_DRAWS):
        """A child of the trial `parent` (its arch with `morphisms` random morphisms) within the
        budgets, among up to `draws` tries, and its morphisms; None when every try was over a budget."""
        for _ in range(draws):
            child, moves = apply_morphisms(self.space, parent.arch, self.rng, morphisms, exact_only)
            if self.feasible is None or self.feasible(child):
                return child, moves
        return None

    def _record(self, parent, child: Arch, moves) -> Arch:
        self._lineage[child.hash] = Lineage(parent.number, parent.arch.hash, tuple(m.text for m in moves),
                                            all(m.exact for m in moves), weights_file(parent.arch), weights_file(child))
        return child


@dataclass(frozen=True)
class NashOptions(Options):
    title = "nash strategy"
    children: int = option(8, "--nash-children", "nash: children per hill-climbing round (default 8)", type=int)
    morphisms: int | None = option(None, "--morphisms", MORPHISMS_HELP, type=int)

    def __post_init__(self):
        if self.morphisms is None:
            object.__setattr__(self, "morphisms", 5)
        if self.children < 1 or self.morphisms < 1:
            raise HwnasError(f"--nash-children and --morphisms must be >= 1, got {self.children} and {self.morphisms}")


class NashStrategy(_Lamarckian):
    name = "nash"
    records = (NashOptions,)

    def __init__(self, options: NashOptions = NashOptions(), **changes):
        """`changes`: fields of `options` to replace (`NashStrategy(children=4, morphisms=2)`)."""
        self.options = dataclasses.replace(options, **changes)

    def settings(self) -> dict:
        return {"children": self.options.children, "morphisms": self.options.morphisms, "morphism_kinds": "exact"}

    def start(self, space, seed, run_dir, objectives, batch=1) -> None:
        super().start(space, seed, run_dir, objectives, batch)
        self.current = None  # the trial the climb stands on
        self.starts = 0
        self.round_told, self.round_best, self.rounds = 0, None, 0

    def ask(self) -> Arch:
        if self.current is not None:
            made = self._child(self.current, self.options.morphisms, exact_only=True)
            if made is not None:
                return self._record(self.current, *made)
            # every growth of the current network is over a budget: the climb is over, start another
            self.current, self.round_told, self.round_best = None, 0, None
        # the small start; after a failed start or a finished climb, a random network within the budgets
        self.starts += 1
        return self._from_scratch(small_start(self.space) if self.starts == 1 else self.sample_feasible(self.rng))

    def tell(self, trial) -> None:
        scored = trial.state == "complete" and trial.objective is not None
        if trial.lineage.get("parent") is None:  # a starting network
            if scored and (self.current is None or trial.objective > self.current.objective):
                self.current, self.round_told, self.round_best = trial, 0, None
            return
        if scored and (self.round_best is None or trial.objective > self.round_best.objective):
            self.round_best = trial
        self.round_told += 1
        if self.round_told >= self.options.children and self.current is not None:  # keep the best, parent included
            if self.round_best is not None and self.round_best.objective > self.current.objective:
                self.current = self.round_best
            self.round_told, self.round_best = 0, None
            self.rounds += 1


@dataclass(frozen=True)
class LemonadeOptions(Options):
    title = "lemonade strategy"
    init: int = option(3, "--lemonade-init", "lemonade: starting networks trained from scratch (default 3)", type=int)
    children: int = option(64, "--lemonade-children", "lemonade: children generated per generation (default 64; "
                                                      "cheap, by prediction only)", type=int)
    accept: int = option(8, "--lemonade-accept", "lemonade: children trained per generation (default 8)", type=int)
    morphisms: int | None = option(None, "--morphisms", MORPHISMS_HELP, type=int)

    def __post_init__(self):
        if self.morphisms is None:
            object.__setattr__(self, "morphisms", 1)
        if self.init < 1 or self.morphisms < 1 or not 1 <= self.accept <= self.children:
            raise HwnasError(f"lemonade needs --lemonade-init >= 1, --morphisms >= 1 and --lemonade-accept in "
                             f"1..--lemonade-children, got {self.init}, {self.morphisms}, {self.accept} and "
                             f"{self.children}")


def kde_density(points: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Gaussian kernel density of `points` at `queries` (rows), each dimension standardised by the
    points' spread and Scott's bandwidth n^(-1/(d+4)); a single point gets unit spread."""
    n, d = points.shape
    scale = points.std(axis=0)
    scale[scale <= 1e-12] = 1.0
    h = n ** (-1.0 / (d + 4))
    z = (queries[:, None, :] - points[None, :, :]) / (scale * h)
    return np.exp(-0.5 * (z ** 2).sum(-1)).mean(axis=1)


class LemonadeStrategy(_Lamarckian):
    name = "lemonade"
    records = (LemonadeOptions,)

    def __init__(self, options: LemonadeOptions = LemonadeOptions(), **changes):
        """`changes`: fields of `options` to replace (`LemonadeStrategy(children=20, accept=3)`)."""
        self.options = dataclasses.replace(options, **changes)

    def settings(self) -> dict:
        o = self.options
        return {"init": o.init, "children": o.children, "accept": o.accept, "morphisms": o.morphisms,
                "cheap_objectives": ["latency", self.cost_name()], "morphism_kinds": "exact and approximate"}

    def cost_name(self) -> str:
        return "memory" if "memory" in getattr(self, "objectives", ()) else "params"

    def start(self, space, seed, run_dir, objectives, batch=1) -> None:
        super().start(space, seed, run_dir, objectives, batch)
        self.scored: dict[str, object] = {}  # hash -> its complete, feasible trial
        self.proposed: set[str] = set()
        self.queue = self._initial()
        self.generations = 0

    def _initial(self) -> list[Arch]:
        """The small start and `init - 1` exact growths of it (2, 4, ... morphisms), within the budgets."""
        base = small_start(self.space)
        out, seen = [base], {base.hash}
        for i in range(1, self.options.init):
            for _ in range(FEASIBLE_DRAWS):
                arch, _ = apply_morphisms(self.space, base, self.rng, 2 * i, exact_only=True)
                if arch.hash not in seen and (self.feasible is None or self.feasible(arch)):
                    out.append(arch)
                    seen.add(arch.hash)
                    break
        return [self._from_scratch(a) for a in out]

    def _cheap(self, arch_or_trial) -> tuple[float, float]:
        if hasattr(arch_or_trial, "predicted_ms"):
            ms, cost = arch_or_trial.predicted_ms, (arch_or_trial.peak_activation_bytes if self.cost_name() == "memory"
                                                    else arch_or_trial.params)
        else:
            pred = self.predict(arch_or_trial)
            ms, cost = pred.latency_ms, (pred.peak_activation_bytes if self.cost_name() == "memory" else pred.params)
        return math.log(max(ms, 1e-9)), math.log(max(cost, 1))

    def front(self) -> list:
        """The Pareto front of the scored trials over (top-1, -latency, -params or -memory)."""
        pool = list(self.scored.values())
        values = {t.arch.hash: (t.objective, -t.predicted_ms,
                                -(t.peak_activation_bytes if self.cost_name() == "memory" else t.params)) for t in pool}
        return sorted((t for t in pool if not any(dominates(values[o.arch.hash], values[t.arch.hash]) for o in pool)),
                      key=lambda t: t.number)

    def ask(self) -> Arch:
        while not self.queue:
            self.queue = self._generation()
        arch = self.queue.pop(0)
        self.proposed.add(arch.hash)
        return arch

    def _generation(self) -> list[Arch]:
        self.generations += 1
        front = self.front()
        if not front:  # nothing scored yet (failures, or a batch ahead of its tells): another start
            return [self._from_scratch(self.sample_feasible(self.rng))]
        cheap = np.array([self._cheap(t) for t in front])
        weights = 1.0 / kde_density(cheap, cheap)
        parents = self.rng.choices(front, weights=weights.tolist(), k=self.options.children)
        children: dict[str, tuple] = {}
        for parent in parents:
            child, moves = apply_morphisms(self.space, parent.arch, self.rng, self.options.morphisms, exact_only=False)
            if (moves and child.hash not in self.proposed and child.hash not in children
                    and (self.feasible is None or self.feasible(child))):
                children[child.hash] = (parent, child, moves)
        if not children:
            return [self._from_scratch(self.sample_feasible(self.rng))]
        pool = list(children.values())
        child_cheap = np.array([self._cheap(child) for _, child, _ in pool])
        density = kde_density(np.concatenate([cheap, child_cheap]), child_cheap)
        weights = (1.0 / density).tolist()
        chosen = []
        for _ in range(min(self.options.accept, len(pool))):  # without replacement, sparse regions first
            i = self.rng.choices(range(len(pool)), weights=weights, k=1)[0]
            chosen.append(pool.pop(i))
            weights.pop(i)
        return [self._record(parent, child, moves) for parent, child, moves in chosen]

    def tell(self, trial) -> None:
        if trial.state == "complete" and trial.objective is not None and trial.feasible:
            self.scored.setdefault(trial.arch.hash, trial)
