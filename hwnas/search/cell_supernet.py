"""A single-path weight-sharing supernet of a cell space (nb201, darts): every candidate op of every
edge of every cell, held once; one architecture runs as the path of its choices (SPOS, Guo et al.
2020). The shared evaluator uses it for cell spaces as it uses hwnas.search.supernet for layer-wise ones.

The skeleton is the space's own network (NB201's stem, stages and residual reductions; DARTS's stem,
cells and preprocessing), its edge ops built by hwnas.core.edges.edge_module, so a path computes
what the discrete network computes. `channels` and `cells` shrink it to a proxy (fewer, narrower
cells), the usual way to rank a cell space's architectures at a fraction of the cost.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from ..core import cells as nb201_cells
from ..core import darts
from ..core.edges import edge_module
from ..core.spaces import SearchSpace
from ..core.spaces.darts import DartsSpace
from ..core.spaces.nb201 import NB201Space
from ..errors import HwnasError
from ..train.loop import init_for_training


class _MixedEdges(nn.Module):
    """Per edge (to, source) of a cell, one module per candidate op (ModuleDict keys `to_source`)."""

    def __init__(self, space: SearchSpace, edge_list: Sequence[tuple[int, int, int]], ops: Sequence[str],
                 channels: int):
        super().__init__()
        self.ops = tuple(ops)
        self.edges = nn.ModuleDict({f"{to}_{source}": nn.ModuleList(edge_module(space, op, channels, stride)
                                                                       for op in self.ops)
                                    for to, source, stride in edge_list})

    def run(self, to: int, source: int, op: str, x: torch.Tensor) -> torch.Tensor:
        return self.edges[f"{to}_{source}"][self.ops.index(op)](x)


class _NB201Cell(nn.Module):
    def __init__(self, space: NB201Space, channels: int):
        super().__init__()
        self.mixed = _MixedEdges(space, [(j, i, 1) for j, i in nb201_cells.CELL_EDGES], space.decisions[0].choices,
                                 channels)

    def forward(self, x: torch.Tensor, choices: Mapping[str, str]) -> torch.Tensor:
        nodes = [x]
        for j in (1, 2, 3):
            terms = [self.mixed.run(j, i, choices[f"edge_{j}_{i}"], nodes[i]) for i in range(j)
                     if choices[f"edge_{j}_{i}"] != "none"]
            nodes.append(sum(terms[1:], terms[0]) if terms else x.mul(0.0))
        return nodes[3]


class _DartsCell(nn.Module):
    def __init__(self, space: DartsSpace, plan: darts.CellPlan):
        super().__init__()
        self.plan = plan
        self.preprocess0 = darts.preprocess0(plan)
        self.preprocess1 = darts.preprocess1(plan)
        self.mixed = _MixedEdges(space, [(node, source, plan.edge_stride(source)) for node in darts.NODES
                                  for source in range(node)], darts.DARTS_OPS, plan.channels)
        self.choices: Mapping[str, str] | None = None

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        genotype = darts.Genotype.from_choices(self.choices)
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for node in darts.NODES:
            pairs = genotype.node(self.plan.cell_type, node)
            terms = [self.mixed.run(node, source, op, states[source]) for op, source in pairs if op != "none"]
            if not terms:
                op, source = pairs[0]
                terms = [self.mixed.run(node, source, op, states[source])]
            states.append(terms[0] + terms[1] if len(terms) == 2 else terms[0])
        return torch.cat([states[i] for i in darts.CONCAT], dim=1)


class CellSupernet(nn.Module):
    """The single-path supernet of a cell space. `candidates` lists each decision's choices (a path
    is one index per decision); `forward_path(x, indices)` runs that architecture."""

    def __init__(self, space: SearchSpace, channels: int | None = None, cells: int | None = None):
        super().__init__()
        if not isinstance(space, (NB201Space, DartsSpace)):
            raise HwnasError(f"space {space.name!r} is not a cell space (nb201, darts); use hwnas.search.supernet")
        self.space_name = space.name
        self.decision_names = space.decision_names
        self.candidates = tuple(d.choices for d in space.decisions)
        if isinstance(space, NB201Space):
            self._build_nb201(space, channels, cells)
        else:
            self._build_darts(space, channels, cells)
        init_for_training(self, self.classifier)

    def _build_nb201(self, space: NB201Space, channels: int | None, cells: int | None) -> None:
        widths = space.channels if channels is None else tuple(channels * 2 ** k for k in range(len(space.channels)))
        per_stage = space.cells_per_stage if cells is None else int(cells)
        self.kind = "nb201"
        self.stem = nb201_cells.stem(3, widths[0])
        blocks, c_prev = [], widths[0]
        for stage, c in enumerate(widths):
            if stage:
                blocks.append(nb201_cells.ResNetBasicblock(c_prev, c, 2))
            blocks.extend(_NB201Cell(space, c) for _ in range(per_stage))
            c_prev = c
        self.cells = nn.ModuleList(blocks)
        self.head = nb201_cells.Head(c_prev, space.num_classes)
        self.classifier = self.head.classifier

    def _build_darts(self, space: DartsSpace, channels: int | None, cells: int | None) -> None:
        self.kind = "darts"
        self.net = darts.DartsNetwork(None, space.num_classes, space.channels if channels is None else channels,
                                      space.cells if cells is None else cells, space.resolution,
                                      make_cell=lambda plan: _DartsCell(space, plan))
        self.classifier = self.net.classifier

    def choices(self, indices: Sequence[int]) -> dict[str, str]:
        return {name: cands[i] for name, cands, i in zip(self.decision_names, self.candidates, indices)}

    def weight_parameters(self) -> list[nn.Parameter]:
        return list(self.parameters())

    def forward_path(self, x: torch.Tensor, indices: Sequence[int]) -> torch.Tensor:
        """The single architecture `indices` (one choice index per decision), with shared weights."""
        choices = self.choices(indices)
        if self.kind == "darts":
            for cell in self.net.cells:
                cell.choices = choices
            return self.net(x)
        x = self.stem(x)
        for block in self.cells:
            x = block(x, choices) if isinstance(block, _NB201Cell) else block(x)
        return self.head(x)

    def forward(self, x: torch.Tensor, indices: Sequence[int]) -> torch.Tensor:
        return self.forward_path(x, indices)
