"""Which architectures to measure end to end: uniform samples and the lopsided ones searches end on.

Uniform sampling almost never draws what a search returns under a tight or loose budget: all
cheap blocks, many skips, every layer at the largest expansion, a heavy front or back. A
calibration fitted on uniform samples alone extrapolates badly there (on this project's VM a
per-type fit made an all-e1 network 59% slower than measured). So calibration and validation
sets mix uniform samples with *families* of lopsided ones:

  cheap / costly       every decision picks among its 2 cheapest / costliest choices
  front / back         costly choices in the first half of the decisions, cheap ones in the
                       second (front), or the other way round (back)
  only:TOKEN           every decision picks among its choices named with TOKEN where it has
                       some (`only:e1` is all-e1, `only:skip` skips wherever it may)
  dirichlet            a random preference per choice name (mixes in between)

A choice's cost is its marginal raw LUT latency: the reference architecture with that one
decision changed. Each family draws at random inside its restriction, so a calibration and a
validation with different seeds share families but not architectures.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Sequence

from ..core.arch import Arch
from ..core.reference import reference_arch
from ..core.spaces import SearchSpace

UNIFORM = "uniform"


@dataclass(frozen=True)
class Sample:
    """An architecture to measure and the family it was drawn from."""

    arch: Arch
    family: str

    @property
    def lopsided(self) -> bool:
        return self.family != UNIFORM


def choice_costs(space: SearchSpace, raw_latency: Callable[[Arch], float]) -> dict[str, dict[str, float]]:
    """{decision: {choice: raw latency of the reference architecture with that choice}}."""
    base = reference_arch(space).choice_map
    costs: dict[str, dict[str, float]] = {}
    for decision in space.decisions:
        costs[decision.name] = {c: raw_latency(Arch.create(space, {**base, decision.name: c})) for c in decision.choices}
    return costs


def families(space: SearchSpace) -> list[str]:
    """The lopsided families of a space, in a fixed order (see the module doc)."""
    tokens = sorted({t for d in space.decisions for c in d.choices for t in c.split("_") if not t.replace(".", "").isdigit()})
    return ["cheap", "costly", "front", "back", *[f"only:{t}" for t in tokens], "dirichlet"]


def _ranked(costs: dict[str, float]) -> list[str]:
    return sorted(costs, key=lambda c: (costs[c], c))


def _draw(space: SearchSpace, family: str, costs: dict[str, dict[str, float]], rng: random.Random) -> dict[str, str]:
    names = [d.name for d in space.decisions]
    if family == UNIFORM:
        return space.sample(rng)
    if family == "dirichlet":
        labels = sorted({c for d in space.decisions for c in d.choices})
        weight = {c: rng.gammavariate(0.5, 1.0) + 1e-9 for c in labels}
        return {d.name: rng.choices(d.choices, weights=[weight[c] for c in d.choices])[0] for d in space.decisions}
    choices = {}
    half = len(names) // 2
    for i, d in enumerate(space.decisions):
        ranked = _ranked(costs[d.name])
        if family.startswith("only:"):
            token = family.split(":", 1)[1]
            pool = [c for c in d.choices if token in c.split("_")] or list(d.choices)
        else:
            costly = family == "costly" or (family == "front" and i < half) or (family == "back" and i >= half)
            pool = ranked[-2:] if costly else ranked[:2]
        choices[d.name] = rng.choice(pool)
    return choices


def draw_samples(space: SearchSpace, costs: dict[str, dict[str, float]], uniform: int, lopsided: int, seed: int,
                 exclude: set[str] = frozenset()) -> list[Sample]:
    """`uniform` uniform and `lopsided` lopsided distinct architectures (families taken in turn),
    none of whose hashes is in `exclude`; deterministic in `seed`."""
    rng = random.Random(seed)
    kinds = families(space)
    seen = set(exclude)
    out: list[Sample] = []
    wanted = [UNIFORM] * uniform + [kinds[i % len(kinds)] for i in range(lopsided)]
    for family in wanted:
        for _ in range(200):  # a small space may run out of distinct members of a family
            arch = Arch.create(space, _draw(space, family, costs, rng))
            if arch.hash not in seen:
                seen.add(arch.hash)
                out.append(Sample(arch, family))
                break
    return out


def calibration_samples(space: SearchSpace, costs: dict[str, dict[str, float]], count: int, seed: int,
                        exclude: set[str] = frozenset()) -> list[Sample]:
    """A calibration set: half uniform, half lopsided, so the fit sees the corners searches end on."""
    lopsided = count // 2
    return draw_samples(space, costs, count - lopsided, lopsided, seed, exclude)


def group_of(samples: Sequence[Sample]) -> list[str]:
    """`uniform` or `lopsided` per sample (what reports and model selection balance over)."""
    return ["lopsided" if s.lopsided else UNIFORM for s in samples]
