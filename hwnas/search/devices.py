"""The devices of a search: `--lut [NAME=]TABLE` and `--latency-budget [NAME=]BUDGET`, each
repeatable, into one latency model and one budget.

Rules:
- One `--lut TABLE` (named or not) is the single-device search: its table's predictor, one budget.
- Several `--lut NAME=TABLE`: every one is named, each name once; every budget is named after one
  of them (`--latency-budget NAME=8ms`, or `NAME=40%` of that device's own range); a device without
  a budget is reported, not constrained. The latency model is hwnas.latency_tables.multi_device's,
  whose budget is the first budgeted device's, and a search that meets it meets every budget.
- Before any work the budgets are checked feasible each on its own device and together: some
  architecture must meet all of them (exact search over weighted sums of the devices' per-layer
  costs for a layer-wise space, else 2,000 sampled architectures).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Sequence

from ..core.arch import Arch
from ..errors import HwnasError, LutError
from ..latency_tables.multi_device import Device, MultiDevicePredictor
from .budget import BudgetError, parse_budget, resolve_budget
from .decision_costs import decision_costs

_NAME = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)=(?P<value>.+)$")


@dataclass(frozen=True)
class Named:
    """One `[NAME=]VALUE` flag: NAME None when not given."""

    name: str | None
    value: str

    @property
    def text(self) -> str:
        return self.value if self.name is None else f"{self.name}={self.value}"


def split_named(text: str) -> Named:
    """'pixel3=luts/pixel3.json' -> (pixel3, luts/pixel3.json); 'lut.json' -> (None, lut.json)."""
    match = _NAME.match(text)
    return Named(match["name"], match["value"]) if match else Named(None, text)


def parse_devices(luts: Sequence[str], budgets: Sequence[str]) -> tuple[tuple[Named, ...], tuple[Named, ...]]:
    """The --lut and --latency-budget flags, checked against each other (module rules); the
    budgets' values are parsed (a bad one is refused before any work)."""
    tables = tuple(split_named(t) for t in luts)
    given = tuple(split_named(b) for b in budgets)
    for budget in given:
        parse_budget(budget.value)
    if len(tables) <= 1:
        name = tables[0].name if tables else None
        if len(given) > 1:
            raise HwnasError("several --latency-budget flags need several devices: give --lut NAME=TABLE for each, "
                             "or one --latency-budget")
        if given and given[0].name is not None and given[0].name != name:
            raise HwnasError(f"--latency-budget {given[0].text} names device {given[0].name!r}, but no --lut has that "
                             f"name: write --lut {given[0].name}=TABLE, or drop the name from the budget")
        return tables, given
    unnamed = [t.text for t in tables if t.name is None]
    if unnamed:
        raise HwnasError(f"with several --lut flags each names its device: write --lut NAME={unnamed[0]}")
    names = [t.name for t in tables]
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise HwnasError(f"device {doubled[0]!r} is given twice by --lut; give each device once")
    for budget in given:
        if budget.name is None:
            raise HwnasError(f"--latency-budget {budget.value} does not say which device it budgets: write "
                             f"--latency-budget NAME={budget.value} with NAME one of {', '.join(names)}")
        if budget.name not in names:
            raise HwnasError(f"--latency-budget {budget.text} names no --lut device; the devices are "
                             f"{', '.join(names)}")
    budget_names = [b.name for b in given]
    if len(set(budget_names)) != len(budget_names):
        raise HwnasError("a device has two --latency-budget flags; give each device one budget")
    return tables, given


def build_model(tables: Sequence[Named], budgets: Sequence[Named], predictors: Sequence) -> tuple[object, float | None]:
    """The latency model and its budget (ms, in the model's units) of checked flags, given each
    table's predictor (in `tables`' order). One device: its predictor and resolved budget."""
    resolved = {b.name: resolve_budget(parse_budget(b.value), predictors[_index(tables, b.name)]) for b in budgets}
    if len(tables) <= 1:
        budget = next(iter(resolved.values()), None)
        return predictors[0], budget
    devices = [Device(t.name, p, resolved.get(t.name), t.value) for t, p in zip(tables, predictors)]
    model = MultiDevicePredictor(devices)
    if model.budget_ms is not None and len(model.budgeted) > 1:
        refuse_jointly_infeasible(model)
    return model, model.budget_ms


def _index(tables: Sequence[Named], name: str | None) -> int:
    if len(tables) <= 1:
        return 0
    return [t.name for t in tables].index(name)


#: random weightings of the devices tried (beside each device alone and all alike) when looking for
#: an architecture within every budget
MIXES = 200


def closest_to_budgets(model: MultiDevicePredictor, samples: int = 2000, seed: int = 0) -> Arch:
    """An architecture of the smallest largest latency/budget found. Where the latency adds up
    over the space's decisions (hwnas.search.decision_costs: layer-wise spaces, cell spaces of a
    profiled table): for weightings of the devices (each alone, all alike, and random mixes), the
    per-decision argmin of the weighted costs, which is exact for that weighting; the best of those
    by the real criterion. Otherwise: the best of `samples` sampled architectures."""
    space = model.space
    rng = random.Random(seed)
    try:
        table = decision_costs(model)
    except LutError:
        archs = [Arch.create(space, space.sample(rng)) for _ in range(samples)]
        return min(archs, key=model.latency_ms)
    costs = [device.costs for device in table.per_device]
    n = len(costs)
    mixes = [tuple(float(i == d) for i in range(n)) for d in range(n)] + [(1.0,) * n]
    mixes += [tuple(rng.expovariate(1.0) for _ in range(n)) for _ in range(MIXES)]  # uniform on the simplex
    best = None
    for weights in mixes:
        choices = {}
        for di, (name, candidates) in enumerate(zip(table.names, table.candidates)):
            mixed = sum(w * per_decision[di] for w, per_decision in zip(weights, costs))
            choices[name] = candidates[int(mixed.argmin())]
        arch = Arch.create(space, choices)
        value = model.latency_ms(arch)
        if best is None or value < best[0]:
            best = (value, arch)
    return best[1]


def refuse_jointly_infeasible(model: MultiDevicePredictor) -> None:
    """Each budget was checked on its own device; refuse budgets no architecture found meets together."""
    arch = closest_to_budgets(model)
    if model.latency_ms(arch) <= model.budget_ms * (1 + 1e-9):
        return
    closest = ", ".join(f"{d['device']} {d['predicted_ms']:.4g} ms (budget {d['budget_ms']:.4g})"
                        for d in model.report(arch) if d["budget_ms"] is not None)
    raise BudgetError(f"no architecture of space {model.space.name!r} was found within every device's budget at once "
                      f"(the closest: {closest}); raise the budget of the device furthest over it")
