"""Latency budgets: parsing, feasibility against the LUT, LUT-guided repair of an architecture that
exceeds its budget (and filling of one that leaves much of it unused), and the k most probable
architectures of a learned per-layer distribution."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

from ..core.arch import Arch
from ..errors import HwnasError, LutError
from ..latency_tables.predictor import LatencyPredictor
from ..core.spaces import LayerwiseSpace, SearchSpace
from ..core.spaces.darts import DartsSpace
from .decision_costs import DecisionCosts, decision_costs, latencies_ms, local_decision_costs

_BUDGET = re.compile(r"^\s*(?P<value>\d+(?:\.\d*)?|\.\d+)(?:e(?P<exp>[-+]?\d+))?\s*(?P<unit>ms|s|us|µs|%)?\s*$", re.I)
_UNIT_MS = {"ms": 1.0, "s": 1000.0, "us": 1e-3, "µs": 1e-3}


class BudgetError(HwnasError):
    """A latency budget that cannot be parsed, or that no architecture of the space meets."""


@dataclass(frozen=True)
class BudgetSpec:
    """A parsed `--latency-budget`: an absolute latency (`unit == 'ms'`) or a point of the
    space's range (`unit == '%'`: 0% the fastest architecture, 100% the slowest, by the LUT)."""

    value: float
    unit: str
    text: str


def parse_budget(text: str) -> BudgetSpec:
    """'8ms', '8' (ms), '1.5s', '900us' -> milliseconds; 'P%' -> a point between fastest and slowest."""
    match = _BUDGET.match(str(text))
    if not match:
        raise BudgetError(f"latency budget {text!r} is not a duration; write e.g. 8ms, 8 (ms), 1.5s, 900us or 40%")
    value = float(match["value"]) * (10.0 ** int(match["exp"]) if match["exp"] else 1.0)
    unit = (match["unit"] or "ms").lower()
    if unit == "%":
        if not 0.0 <= value <= 100.0:
            raise BudgetError(f"latency budget {text!r}: a percentage of the space's latency range must be 0..100%")
        return BudgetSpec(value, "%", str(text))
    value *= _UNIT_MS[unit]
    if not (value > 0 and math.isfinite(value)):
        raise BudgetError(f"latency budget {text!r} must be a positive duration, e.g. 8ms")
    return BudgetSpec(value, "ms", str(text))


def latency_range_ms(predictor: LatencyPredictor, samples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Predicted latency of the fastest and the slowest architecture (the latency model's own
    `latency_range`: exact for a layer-wise space or a benchmark's table, else sampled)."""
    return predictor.latency_range(samples, seed)


def resolve_budget(spec: BudgetSpec, predictor: LatencyPredictor) -> float:
    """The budget in ms; refuses (before any training) a budget below the fastest architecture."""
    fastest, slowest = latency_range_ms(predictor)
    budget = fastest + spec.value / 100.0 * (slowest - fastest) if spec.unit == "%" else spec.value
    if budget < fastest * (1 - 1e-9):
        raise BudgetError(
            f"latency budget {budget:.4g} ms is infeasible: the fastest architecture of space "
            f"{predictor.space.name!r} is predicted at {fastest:.4g} ms by this table (the slowest at {slowest:.4g} ms"
            f"{'' if predictor.range_is_exact else ', both of 2,000 random architectures'}); "
            f"give a budget of at least {fastest:.4g} ms"
        )
    return budget


#: fill never swaps in a candidate more than 10x less probable than the one it replaces
FILL_MAX_LOG_RATIO = math.log(10.0)


@dataclass(frozen=True)
class BudgetStep:
    """One swap of `layer` from `before` to `after`: a 'downgrade' (repair) saves `saved_ms`, an
    'upgrade' (fill) spends -`saved_ms`; `log_prob_cost` is the log-probability lost in the learned
    distribution; `latency_ms` is the predicted latency after the step."""

    kind: str
    layer: str
    before: str
    after: str
    saved_ms: float
    log_prob_cost: float
    latency_ms: float

    def to_dict(self) -> dict:
        return asdict(self)


def repair_to_budget(space: SearchSpace, predictor: LatencyPredictor, choices: Mapping[str, str],
                     log_probs: Sequence[Sequence[float]], budget_ms: float) -> tuple[Arch, list[BudgetStep]]:
    """Downgrade layers of `choices` until the predicted latency meets `budget_ms`.

    Rule (greedy on the LUT): each step swaps one layer to a faster candidate, choosing the swap
    with the most latency saved per unit of joint log-probability lost (the joint log-probability of
    independent layers is additive, and the argmax maximises it). When some single swap already
    meets the budget and costs no more than the best-ratio swap, the cheapest such swap is taken
    instead, so the last step does not overshoot. Terminates because the budget was checked
    feasible and every step is strictly faster. The layers are a layer-wise space's, or the edges
    of a cell space whose latency adds up over them (hwnas.search.decision_costs).

    Several devices (hwnas.latency_tables.multi_device, costs in units of the budget): the
    latency saved is summed over the devices still over the budget, and a swap may not put a
    device that meets the budget over it; a swap finishes when every device meets it. One device
    is the rule above.

    A darts space (an op's stride, so its cost, depends on its node's inputs: not a sum over the
    decisions) is repaired by the same rule on the exact cost of every single swap from the
    current choices (decision_costs.local_decision_costs), recomputed after each step.
    """
    additive = _additive_costs(space, predictor)
    current = dict(choices)
    layers, costs = _costs_at(predictor, additive, current)
    steps: list[BudgetStep] = []
    latencies = latencies_ms(predictor, Arch.create(space, current))
    for _ in range(_max_steps(layers, costs, latencies) * (1 if additive is not None else 2)):
        if max(latencies) <= budget_ms:
            break
        if additive is None and steps:
            layers, costs = _costs_at(predictor, additive, current)
        over = [lat > budget_ms for lat in latencies]
        best_ratio = best_finish = None
        for li, layer in enumerate(layers):
            ci = layer.candidates.index(current[layer.name])
            for cj, cand in enumerate(layer.candidates):
                deltas = [float(per_layer[li][ci] - per_layer[li][cj]) for per_layer in costs]
                after = [lat - d for lat, d in zip(latencies, deltas)]
                saved = sum(d for d, o in zip(deltas, over) if o)
                if saved <= 0 or any(not o and a > budget_ms for o, a in zip(over, after)):
                    continue
                cost = float(log_probs[li][ci] - log_probs[li][cj])
                ratio = math.inf if cost <= 0 else saved / cost
                move = (li, cand, saved, cost, ratio)
                if best_ratio is None or (ratio, saved) > (best_ratio[4], best_ratio[2]):
                    best_ratio = move
                if max(after) <= budget_ms and (best_finish is None or (cost, -saved) < (best_finish[3], -best_finish[2])):
                    best_finish = move
        if best_ratio is None:
            raise BudgetError(f"cannot repair the architecture to {budget_ms:.4g} ms: every layer is at its fastest candidate")
        move = best_finish if best_finish is not None and best_finish[3] <= max(best_ratio[3], 0.0) else best_ratio
        li, cand, saved, cost, _ = move
        layer = layers[li]
        before = current[layer.name]
        current[layer.name] = cand
        arch = Arch.create(space, current)
        latencies = latencies_ms(predictor, arch)
        steps.append(BudgetStep("downgrade", layer.name, before, cand, saved, cost, predictor.latency_ms(arch)))
    if max(latencies) > budget_ms:
        raise BudgetError(f"cannot repair the architecture to {budget_ms:.4g} ms in {len(steps)} steps")
    return Arch.create(space, current), steps


def fill_budget(space: SearchSpace, predictor: LatencyPredictor, choices: Mapping[str, str],
                log_probs: Sequence[Sequence[float]], budget_ms: float) -> tuple[Arch, list[BudgetStep]]:
    """The mirror image of `repair_to_budget` for an architecture well under its budget.

    Why: a latency penalty pushes every layer's probabilities in the same direction (toward its
    faster candidates when the expected latency is over the budget, toward slower ones below it),
    so in a distribution that a short search leaves diffuse, the per-layer argmax sits at the
    extremes and its latency can be far from the budget even when the expected latency meets it.
    Rule: repeatedly swap in the slower candidate with the least log-probability lost per ms
    gained (the next candidate to win the layer's argmax if the latency penalty were eased, i.e.
    the argmax of log p + delta * latency for a growing delta), among the swaps that keep the
    prediction within the budget and lose at most log(10) each; stop when none is left.
    Several devices: the ms gained are summed over them, and every device must stay within.
    A darts space: on the exact costs of single swaps from the current choices, as the repair.
    """
    additive = _additive_costs(space, predictor)
    current = dict(choices)
    layers, costs = _costs_at(predictor, additive, current)
    steps: list[BudgetStep] = []
    latencies = latencies_ms(predictor, Arch.create(space, current))
    for _ in range(_max_steps(layers, costs, latencies) * (1 if additive is not None else 2)):
        if additive is None and steps:
            layers, costs = _costs_at(predictor, additive, current)
        best = None
        for li, layer in enumerate(layers):
            ci = layer.candidates.index(current[layer.name])
            for cj, cand in enumerate(layer.candidates):
                deltas = [float(per_layer[li][cj] - per_layer[li][ci]) for per_layer in costs]
                gained = sum(deltas)
                cost = float(log_probs[li][ci] - log_probs[li][cj])
                if (gained <= 0 or any(lat + d > budget_ms for lat, d in zip(latencies, deltas))
                        or cost > FILL_MAX_LOG_RATIO):
                    continue
                key = (cost / gained, -gained)
                if best is None or key < best[0]:
                    best = (key, li, cand, gained, cost)
        if best is None:
            return Arch.create(space, current), steps
        _, li, cand, gained, cost = best
        layer = layers[li]
        before = current[layer.name]
        current[layer.name] = cand
        arch = Arch.create(space, current)
        latencies = latencies_ms(predictor, arch)
        steps.append(BudgetStep("upgrade", layer.name, before, cand, -gained, cost, predictor.latency_ms(arch)))
    return Arch.create(space, current), steps  # every layer reached its slowest candidate


@dataclass(frozen=True)
class _Layer:
    """A decision the repair swaps: a layer-wise space's layer or a cell space's edge."""

    name: str
    candidates: tuple[str, ...]


def _decisions(table: DecisionCosts) -> list[_Layer]:
    return [_Layer(name, cands) for name, cands in zip(table.names, table.candidates)]


def _additive_costs(space: SearchSpace, predictor):
    """The latency model's costs per decision, or None for a darts space whose model is not
    additive over its decisions (then costs are taken per step at the current choices)."""
    try:
        return decision_costs(predictor)
    except LutError:
        if isinstance(space, DartsSpace):
            return None
        raise


def _costs_at(predictor, additive, current: Mapping[str, str]):
    """(decisions, per-device cost rows) for the swaps from `current`."""
    table = additive if additive is not None else local_decision_costs(predictor, current)
    return _decisions(table), [device.costs for device in table.per_device]


def _max_steps(layers: Sequence[_Layer], costs, latencies: Sequence[float]) -> int:
    """Upper bound of repair/fill steps: each step moves one layer strictly toward its fastest
    (slowest) candidate, so a layer moves at most len(candidates) - 1 times (per device that a
    step may trade against another, with several). Non-finite costs would break that argument
    (NaN compares false), so they are refused here."""
    finite = all(math.isfinite(lat) for lat in latencies) and all(
        math.isfinite(float(v)) for per_layer in costs for row in per_layer for v in row)
    if not finite:
        raise BudgetError("the latency table gives non-finite latencies for this space; check it with `hwnas lut show`")
    return (sum(len(layer.candidates) - 1 for layer in layers) + 1) * len(costs)


def fit_to_budget(space: SearchSpace, predictor: LatencyPredictor, choices: Mapping[str, str],
                  log_probs: Sequence[Sequence[float]], budget_ms: float, fill: bool = True
                  ) -> tuple[Arch, list[BudgetStep]]:
    """Repair `choices` if over the budget; otherwise fill it toward the budget when `fill`."""
    arch, steps = repair_to_budget(space, predictor, choices, log_probs, budget_ms)
    if not steps and fill:
        arch, steps = fill_budget(space, predictor, choices, log_probs, budget_ms)
    return arch, steps


def top_k_choices(space: LayerwiseSpace, log_probs: Sequence[Sequence[float]], k: int) -> list[tuple[dict[str, str], float]]:
    """The k most probable architectures of independent per-layer distributions, with their joint
    log-probabilities, best first. A beam of width k is exact here: the prefix of a top-k
    assignment is always among the top-k prefixes, because scores add up layer by layer."""
    beam: list[tuple[float, tuple[int, ...]]] = [(0.0, ())]
    for li in range(len(space.layers)):
        grown = [(score + float(lp), path + (ci,)) for score, path in beam for ci, lp in enumerate(log_probs[li])]
        grown.sort(key=lambda item: (-item[0], item[1]))
        beam = grown[:k]
    return [({layer.name: layer.candidates[ci] for layer, ci in zip(space.layers, path)}, score) for score, path in beam]
