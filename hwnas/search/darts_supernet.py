"""A DARTS supernet over a cell space (Liu et al., DARTS, ICLR 2019): every edge of the cell is a
mixed op, the softmax(alpha)-weighted sum of all its candidate ops, alpha shared by every cell.

The abstraction the strategy sees is small, so that any cell space can be searched:

  CellEdge    one searchable edge: its decision name, the nodes it joins, its candidate op names
  make_op     a factory (op name, channels) -> nn.Module, the space's own op modules
  a supernet  `edge_names`, `candidates`, `arch_parameters()` (one logit vector per edge),
              `weight_parameters()`, `probabilities()` and `forward(x, aux_skip=0.0)`

`CellSupernet` is that supernet for NAS-Bench-201's cell and macro skeleton (stem; stages of cells
with a residual reduction block between them; head), built from hwnas.core.cells' modules at a
reduced width and depth. A space with another cell form (two input nodes, concatenated outputs,
separate reduction cells) builds its own skeleton around the same `MixedEdge`s and alphas.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..core.cells import Head, ResNetBasicblock, edge_op, stem
from ..core.spaces import SearchSpace
from ..errors import HwnasError
from ..train.loop import init_for_training

OpFactory = Callable[[str, int], nn.Module]


@dataclass(frozen=True)
class CellEdge:
    """One searchable edge: decision `name`, into node `target` from node `source`, and the
    names of its candidate ops (the decision's choices, in their order)."""

    name: str
    source: int
    target: int
    candidates: tuple[str, ...]


def cell_edges(space: SearchSpace) -> tuple[CellEdge, ...]:
    """The edges of a cell space (one that lists `cell_edges` as (decision, to, from), as nb201 does)."""
    edges = getattr(space, "cell_edges", None)
    if not edges:
        raise HwnasError(f"space {space.name!r} is not a cell space; the darts strategy searches cell spaces "
                         "(e.g. nb201)")
    return tuple(CellEdge(name, source, target, space.decision(name).choices) for name, target, source in edges)


class MixedEdge(nn.Module):
    """All candidate ops of one edge; the output is their sum weighted by `weights` (DARTS's mixed
    op), plus `aux_skip` * x (DARTS-'s auxiliary skip connection) when it is non-zero."""

    def __init__(self, edge: CellEdge, make_op: OpFactory, channels: int):
        super().__init__()
        self.ops = nn.ModuleList(make_op(name, channels) for name in edge.candidates)

    def forward(self, x: torch.Tensor, weights: torch.Tensor, aux_skip: float = 0.0) -> torch.Tensor:
        out = sum(w * op(x) for w, op in zip(weights, self.ops))
        return out + aux_skip * x if aux_skip else out


class MixedCell(nn.Module):
    """A cell of summing nodes (NB201's form): node 0 is the input, each later node the sum of its
    incoming mixed edges, the output the last node."""

    def __init__(self, edges: Sequence[CellEdge], make_op: OpFactory, channels: int):
        super().__init__()
        self.edges = tuple(edges)
        self.nodes = 1 + max(e.target for e in self.edges)
        self.mixed = nn.ModuleList(MixedEdge(e, make_op, channels) for e in self.edges)

    def forward(self, x: torch.Tensor, weights: Sequence[torch.Tensor], aux_skip: float = 0.0) -> torch.Tensor:
        nodes = [x]
        for j in range(1, self.nodes):
            nodes.append(sum(mixed(nodes[e.source], w, aux_skip)
                             for e, mixed, w in zip(self.edges, self.mixed, weights) if e.target == j))
        return nodes[-1]


class CellSupernet(nn.Module):
    """NB201's skeleton with mixed cells: stem conv at `channels[0]`; per stage `cells_per_stage`
    mixed cells, a ResNetBasicblock (stride 2) between stages; BN, ReLU, pool, linear. One alpha
    vector per edge (1e-3 x normal noise: nearly uniform, as DARTS initialises it), shared by every cell,
    as in DARTS on NB201."""

    def __init__(self, edges: Sequence[CellEdge], num_classes: int, channels: Sequence[int] = (16, 32, 64),
                 cells_per_stage: int = 5, make_op: OpFactory = edge_op):
        super().__init__()
        if cells_per_stage < 1 or not channels or min(channels) < 1:
            raise HwnasError("the supernet needs at least one cell per stage and positive channel counts")
        self.edges = tuple(edges)
        self.edge_names = tuple(e.name for e in self.edges)
        self.candidates = tuple(e.candidates for e in self.edges)
        self.stem = stem(3, channels[0])
        blocks: list[nn.Module] = []
        c_prev = channels[0]
        for stage, c in enumerate(channels):
            if stage:
                blocks.append(ResNetBasicblock(c_prev, c, 2))
            blocks.extend(MixedCell(self.edges, make_op, c) for _ in range(cells_per_stage))
            c_prev = c
        self.cells = nn.ModuleList(blocks)
        self.head = Head(c_prev, num_classes)
        self.alphas = nn.ParameterList(nn.Parameter(1e-3 * torch.randn(len(e.candidates))) for e in self.edges)
        init_for_training(self, self.head.classifier)

    @classmethod
    def for_space(cls, space: SearchSpace, channels: Sequence[int], cells_per_stage: int) -> "CellSupernet":
        return cls(cell_edges(space), space.num_classes, channels, cells_per_stage)

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(a) for a in self.alphas}
        return [p for p in self.parameters() if id(p) not in arch]

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.alphas)

    def probabilities(self) -> list[torch.Tensor]:
        """softmax(alpha) per edge: the mixing weights (differentiable)."""
        return [F.softmax(a, dim=0) for a in self.alphas]

    def log_probabilities(self) -> list[list[float]]:
        return [F.log_softmax(a.detach(), dim=0).tolist() for a in self.alphas]

    def argmax_choices(self) -> dict[str, str]:
        """The derived cell: per edge the op of the largest alpha (NB201 keeps one op per edge)."""
        return {name: cands[int(a.detach().argmax())] for name, cands, a in zip(self.edge_names, self.candidates,
                                                                                self.alphas)}

    def forward(self, x: torch.Tensor, aux_skip: float = 0.0) -> torch.Tensor:
        """Logits with every edge mixed by softmax(alpha); `aux_skip`: DARTS-'s auxiliary skip weight."""
        weights = self.probabilities()
        x = self.stem(x)
        for block in self.cells:
            x = block(x, weights, aux_skip) if isinstance(block, MixedCell) else block(x)
        return self.head(x)


def build_supernet(space: SearchSpace, channels: Sequence[int], cells_per_stage: int) -> nn.Module:
    """The DARTS supernet of a cell space: NB201's skeleton for a space of summing-node cells (nb201).
    A space of another cell form adds its skeleton here (same MixedEdge, same supernet methods)."""
    return CellSupernet.for_space(space, channels, cells_per_stage)
