"""Latency as a sum over decisions: `fixed + sum over decisions of cost[decision][choice]`.

A layer-wise space has this form by construction (the predictor's `layer_costs`). A cell space
whose prediction adds up its edges' ops (nb201: each non-`none` edge op once per cell, plus the
fixed stem, reductions and head, and a calibration linear in op costs and op count) has it too;
its costs are read off the predictor by differences from the all-zero-op architecture, and the
form is checked on random architectures, so a latency model that is not additive (e.g.
HW-NAS-Bench's whole-network latencies) is refused rather than mispredicted. The expected latency
under per-decision probabilities is then differentiable (DARTS's latency term), and the budget
repair of hwnas.search.budget works on any such space.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

import torch

from ..core.arch import Arch
from ..core.spaces import LayerwiseSpace, SearchSpace
from ..errors import LutError
from ..latency_tables.multi_device import MultiDevicePredictor

#: relative tolerance of the additivity check
TOLERANCE = 1e-6


@dataclass(frozen=True)
class DecisionCosts:
    """`names[i]`'s choices `candidates[i]` cost `costs[i][k]` ms on top of `fixed` ms."""

    names: tuple[str, ...]
    candidates: tuple[tuple[str, ...], ...]
    fixed: float
    costs: tuple[torch.Tensor, ...]

    def latency_ms(self, choices) -> float:
        return self.fixed + sum(float(c[cands.index(choices[n])])
                                for n, cands, c in zip(self.names, self.candidates, self.costs))

    def expected(self, probabilities: Sequence[torch.Tensor]) -> torch.Tensor:
        """Expected latency (ms) under per-decision probability vectors; differentiable in them."""
        if len(probabilities) != len(self.costs):
            raise LutError(f"expected {len(self.costs)} probability vectors, got {len(probabilities)}")
        return self.fixed + sum((p * c.to(p.device)).sum() for p, c in zip(probabilities, self.costs))

    @property
    def per_device(self) -> tuple["DecisionCosts", ...]:
        """The costs per budgeted device: this one."""
        return (self,)

    def latencies_ms(self, choices) -> list[float]:
        """The latency per budgeted device: this one."""
        return [self.latency_ms(choices)]

    def scaled(self, factor: float) -> "DecisionCosts":
        return DecisionCosts(self.names, self.candidates, self.fixed * factor, tuple(c * factor for c in self.costs))


@dataclass(frozen=True)
class DeviceDecisionCosts:
    """A search over several devices (hwnas.latency_tables.multi_device): each budgeted device's
    costs in units of the first budget; the latency is the largest of them (the model's rule), and
    so is the expected latency (its gradient is the binding device's)."""

    per_device: tuple[DecisionCosts, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return self.per_device[0].names

    @property
    def candidates(self) -> tuple[tuple[str, ...], ...]:
        return self.per_device[0].candidates

    def latencies_ms(self, choices) -> list[float]:
        return [device.latency_ms(choices) for device in self.per_device]

    def latency_ms(self, choices) -> float:
        return max(self.latencies_ms(choices))

    def expected(self, probabilities: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.stack([device.expected(probabilities) for device in self.per_device]).max()


def check_additive(predictor, summed, over: str, checks: int, seed: int) -> None:
    """`summed(choices)` equals the predictor's latency on `checks` random architectures (to
    TOLERANCE), or LutError: the model is not a sum over `over`."""
    space = predictor.space
    rng = random.Random(seed)
    for _ in range(checks):
        choices = space.sample(rng)
        actual = predictor.latency_ms(Arch.create(space, choices))
        if abs(summed(choices) - actual) > TOLERANCE * max(abs(actual), 1.0):
            raise LutError(f"the latency model of space {space.name!r} is not a sum over {over} (e.g. "
                           f"{actual:.4g} ms predicted, {summed(choices):.4g} ms by the sum), so it has "
                           "no differentiable expected latency; give a --lut table profiled with `hwnas profile`")


def latencies_ms(predictor, arch: Arch) -> list[float]:
    """The predicted latency of `arch` per budgeted device, exactly (not by the additive form's
    float32 sum): the one latency, or each device's in the first budget's units."""
    if isinstance(predictor, MultiDevicePredictor):
        return [scale * p.latency_ms(arch) for scale, p in predictor.in_budget_units()]
    return [predictor.latency_ms(arch)]


def decision_costs(predictor, checks: int = 20, seed: int = 0) -> DecisionCosts | DeviceDecisionCosts:
    """The additive form of `predictor`'s latency on its space; LutError where it has none. A
    multi-device model: every budgeted device's, in the first budget's units."""
    if isinstance(predictor, MultiDevicePredictor):
        return DeviceDecisionCosts(tuple(decision_costs(p, checks, seed).scaled(scale)
                                         for scale, p in predictor.in_budget_units()))
    space: SearchSpace = predictor.space
    names = space.decision_names
    candidates = tuple(space.decision(n).choices for n in names)
    if isinstance(space, LayerwiseSpace):
        fixed, costs = predictor.layer_costs()
        return DecisionCosts(names, candidates, float(fixed), tuple(costs))
    base = {n: cands[0] for n, cands in zip(names, candidates)}
    zero = getattr(space, "zero_op", None)
    if zero is not None:
        base = {n: zero if zero in cands else cands[0] for n, cands in zip(names, candidates)}
    fixed = predictor.latency_ms(Arch.create(space, base))
    costs = tuple(torch.tensor([predictor.latency_ms(Arch.create(space, {**base, n: c})) - fixed for c in cands],
                               dtype=torch.float64) for n, cands in zip(names, candidates))
    result = DecisionCosts(names, candidates, float(fixed), costs)
    check_additive(predictor, result.latency_ms, "its decisions", checks, seed)
    return DecisionCosts(names, candidates, result.fixed, tuple(c.float() for c in costs))


# --- a darts cell space: latency over edges -----------------------------------------------------------
@dataclass(frozen=True)
class EdgeCosts:
    """The latency of a darts architecture over the 28 edges of its two cell types: `fixed` ms
    (stem, input preprocessings, head, calibration offset) plus, per edge the derived cell keeps,
    `costs[e][k]` ms for op k on edge e (summed over every cell of the edge's type, at the edge's
    shape and stride; `none` 0). Exact for a derived architecture (`latency_ms`). A supernet keeps
    every edge, a derived cell 2 of node j's j incoming ones, so `expected` weighs edge e by
    `keep[e]` = 2 / j, the chance a node keeps it were its edges equally strong (an approximation
    DARTS's derivation makes no promise about: it keeps the 2 strongest)."""

    edges: tuple
    fixed: float
    costs: tuple[torch.Tensor, ...]
    keep: tuple[float, ...]

    def latency_ms(self, choices) -> float:
        from ..core.darts import Genotype

        genotype = Genotype.from_choices(choices)
        index = {(e.cell, e.to, e.source): k for k, e in enumerate(self.edges)}
        total = self.fixed
        for cell in ("normal", "reduce"):
            for k, (op, source) in enumerate(getattr(genotype, cell)):
                e = index[(cell, 2 + k // 2, source)]
                total += float(self.costs[e][self.edges[e].ops.index(op)])
        return total

    def expected(self, probabilities: Sequence[torch.Tensor]) -> torch.Tensor:
        """Expected latency (ms) under per-edge op probabilities; differentiable in them."""
        if len(probabilities) != len(self.costs):
            raise LutError(f"expected {len(self.costs)} probability vectors (one per edge), got {len(probabilities)}")
        return self.fixed + sum(w * (p * c.to(p.device)).sum() for p, c, w in zip(probabilities, self.costs, self.keep))

    def scaled(self, factor: float) -> "EdgeCosts":
        return EdgeCosts(self.edges, self.fixed * factor, tuple(c * factor for c in self.costs), self.keep)


@dataclass(frozen=True)
class DeviceEdgeCosts:
    """EdgeCosts of several budgeted devices in the first budget's units; the largest counts."""

    per_device: tuple[EdgeCosts, ...]

    def latency_ms(self, choices) -> float:
        return max(device.latency_ms(choices) for device in self.per_device)

    def expected(self, probabilities: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.stack([device.expected(probabilities) for device in self.per_device]).max()


def edge_costs(predictor, checks: int = 20, seed: int = 0) -> EdgeCosts | DeviceEdgeCosts:
    """The latency model of a darts space over its edges, read off the predictor by differences
    from the all-`none` architecture (each edge op alone) and checked on random architectures;
    LutError where the model is not such a sum."""
    from ..core.darts import NODES
    from ..core.edges import edges

    if isinstance(predictor, MultiDevicePredictor):
        return DeviceEdgeCosts(tuple(edge_costs(p, checks, seed).scaled(scale)
                                     for scale, p in predictor.in_budget_units()))
    space: SearchSpace = predictor.space
    zero = space.zero_op
    base = {n: zero if zero in space.decision(n).choices else space.decision(n).choices[0]
            for n in space.decision_names}
    fixed = predictor.latency_ms(Arch.create(space, base))
    all_edges = edges(space)
    costs = []
    for e in all_edges:
        if e.to == NODES[0]:
            slot, inputs = ("op0" if e.source == 0 else "op1"), None
        elif e.source == 0:
            slot, inputs = "op0", "0_1"
        else:
            slot, inputs = "op1", f"0_{e.source}"
        change = {} if inputs is None else {f"{e.cell}.n{e.to}.inputs": inputs}
        row = [0.0 if op == zero else
               predictor.latency_ms(Arch.create(space, {**base, **change, f"{e.cell}.n{e.to}.{slot}": op})) - fixed
               for op in e.ops]
        costs.append(torch.tensor(row, dtype=torch.float64))
    result = EdgeCosts(all_edges, float(fixed), tuple(costs), tuple(2.0 / e.to for e in all_edges))
    check_additive(predictor, result.latency_ms, "its cells' edge ops", checks, seed)
    return EdgeCosts(all_edges, result.fixed, tuple(c.float() for c in costs), result.keep)


def local_decision_costs(predictor, choices) -> DecisionCosts | DeviceDecisionCosts:
    """The exact cost of each choice of each decision with every other decision held at `choices`
    (the latency change from `choices`, 0 at the current choice; `fixed` the latency of `choices`):
    what a greedy repair needs on a space whose latency is not a sum over its decisions (a darts
    reduction cell: an op's stride depends on its node's inputs). Recomputed after every swap."""
    if isinstance(predictor, MultiDevicePredictor):
        return DeviceDecisionCosts(tuple(local_decision_costs(p, choices).scaled(scale)
                                         for scale, p in predictor.in_budget_units()))
    space: SearchSpace = predictor.space
    names = space.decision_names
    candidates = tuple(space.decision(n).choices for n in names)
    here = predictor.latency_ms(Arch.create(space, choices))
    costs = tuple(torch.tensor([0.0 if c == choices[n] else
                                predictor.latency_ms(Arch.create(space, {**choices, n: c})) - here for c in cands],
                               dtype=torch.float64) for n, cands in zip(names, candidates))
    return DecisionCosts(names, candidates, float(here), costs)
