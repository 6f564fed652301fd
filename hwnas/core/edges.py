"""A cell space as edges with candidate ops: what a differentiable (DARTS) or single-path one-shot
supernet mixes, the same for nb201 and the darts spaces.

- `edges(space)`: every edge of the space's cell(s), `CellEdge(cell, to, source, ops, decision)`.
  nb201: the 6 edges of its one cell (`cell="cell"`, nodes 0..3, `decision` the edge's decision);
  darts: the 14 edges of each of `normal` and `reduce` (states 0, 1 the cell inputs, 2..5 the
  nodes; `decision` None: a discrete darts cell keeps 2 of a node's edges, see `derive_choices`).
- `edge_module(space, op, channels, stride)`: the module of one candidate op, built exactly as
  the space's discrete network builds it (so weights and LUT rows carry over).
- `derive_choices(space, weights)`: an architecture's choices from per-edge op weights (e.g.
  softmaxed alphas): nb201 takes each edge's strongest op (`none` included, as NB201's DARTS
  baselines do); darts keeps, per node, the 2 incoming edges whose strongest non-`none` op is
  strongest, each with that op (DARTS's `genotype()`).
- Where each cell sits in the network and at which width: nb201 stages (`space.channels`,
  `space.cells_per_stage`); darts `space.plans` (hwnas.core.darts.CellPlan: widths, map sizes,
  reduction, and `edge_stride(source)`), and `hwnas.core.darts.DartsNetwork(make_cell=...)` builds
  DARTS's network around any cell module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from torch import nn

from ..errors import SpaceError
from . import cells as nb201_cells
from . import darts
from .spaces import SearchSpace
from .spaces.darts import DartsSpace
from .spaces.nb201 import NB201Space


@dataclass(frozen=True)
class CellEdge:
    """One edge of a cell: into node `to` from node/state `source`; `ops` its candidates in the
    space's order; `decision` the decision that names its op (nb201), or None (darts)."""

    cell: str
    to: int
    source: int
    ops: tuple[str, ...]
    decision: str | None = None

    @property
    def name(self) -> str:
        return f"{self.cell}.{self.to}.{self.source}"


def edges(space: SearchSpace) -> tuple[CellEdge, ...]:
    """Every edge of the space's cell(s) with its candidate ops; SpaceError for a space without cells."""
    if isinstance(space, NB201Space):
        return tuple(CellEdge("cell", to, source, space.decision(name).choices, name)
                     for name, to, source in space.cell_edges)
    if isinstance(space, DartsSpace):
        return tuple(CellEdge(cell, node, source, darts.DARTS_OPS)
                     for cell in darts.CELL_TYPES for node in darts.NODES for source in range(node))
    raise SpaceError(f"space {space.name!r} is not a cell space; edges exist for nb201 and darts, darts_small, darts_tiny")


def edge_module(space: SearchSpace, op: str, channels: int, stride: int = 1) -> nn.Module:
    """The module of candidate `op` at `channels` in and out and `stride` (nb201: stride 1 only)."""
    if isinstance(space, NB201Space):
        if stride != 1:
            raise SpaceError("nb201's cell edges all have stride 1; its reductions are fixed blocks")
        return nb201_cells.edge_op(op, channels)
    if isinstance(space, DartsSpace):
        return darts.darts_op(op, channels, stride)
    raise SpaceError(f"space {space.name!r} is not a cell space; edge ops exist for nb201 and the darts spaces")


def derive_choices(space: SearchSpace, weights: Mapping[CellEdge, Sequence[float]]) -> dict[str, str]:
    """The discrete architecture's choices from each edge's op weights (one per op of `edge.ops`);
    validate with `Arch.create(space, ...)`."""
    all_edges = edges(space)
    missing = [e.name for e in all_edges if e not in weights]
    if missing:
        raise SpaceError(f"no weights for edge {missing[0]}; give one weight per op for every edge of edges(space)")
    for edge in all_edges:
        if len(weights[edge]) != len(edge.ops):
            raise SpaceError(f"edge {edge.name} has {len(edge.ops)} ops but {len(weights[edge])} weights")
    if isinstance(space, NB201Space):
        return {edge.decision: edge.ops[_argmax(weights[edge])] for edge in all_edges}
    choices: dict[str, str] = {}
    zero = space.zero_op
    for cell in darts.CELL_TYPES:
        for node in darts.NODES:
            strongest = []
            for edge in (e for e in all_edges if e.cell == cell and e.to == node):
                live = [k for k, op in enumerate(edge.ops) if op != zero]
                best = max(live, key=lambda k: weights[edge][k])
                strongest.append((weights[edge][best], -edge.source, edge.source, edge.ops[best]))
            (_, _, a, op_a), (_, _, b, op_b) = sorted(sorted(strongest, reverse=True)[:2], key=lambda t: t[2])
            if node != darts.NODES[0]:
                choices[f"{cell}.n{node}.inputs"] = f"{a}_{b}"
            choices[f"{cell}.n{node}.op0"], choices[f"{cell}.n{node}.op1"] = op_a, op_b
    return choices


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=lambda k: values[k])
