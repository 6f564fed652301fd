"""A DARTS supernet over a cell space (Liu et al., DARTS, ICLR 2019): every edge of the cell is a
mixed op, the softmax(alpha)-weighted sum of all its candidate ops.

The abstraction the strategy sees is small, so that any cell space can be searched:

  edges       hwnas.core.edges.edges(space): each edge's cell, nodes and candidate ops
  make_op     a factory (op name, channels) -> nn.Module, the space's own op modules
  a supernet  `edges`, `edge_names`, `candidates`, `arch_parameters()` (one logit vector per edge),
              `weight_parameters()`, `probabilities()`, `log_probabilities()`, `argmax_choices()`
              (the derived architecture), `decision_log_probs(choices)` (per decision of the space,
              what the budget repair weighs), `derived_ops` and `forward(x, aux_skip=0.0)`

`CellSupernet` is that supernet for NAS-Bench-201's cell and macro skeleton (stem; stages of cells
with a residual reduction block between them; head), built from hwnas.core.cells' modules at a
reduced width and depth: one alpha vector per edge shared by every cell, the argmax per edge derived.

`DartsCellSupernet` is DARTS's own search network for the darts spaces (hwnas.core.darts's
skeleton: stem to 3C, cells reading the two previous cells' outputs, 4 nodes each summing its 2..5
incoming mixed edges, outputs concatenated, reduction cells at 1/3 and 2/3 of the depth whose edges
from the cell inputs have stride 2), with separate alphas for the 14 normal and the 14 reduction
edges, and DARTS's derivation (per node the 2 incoming edges with the strongest non-`none` op,
hwnas.core.edges.derive_choices).
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..core import darts as darts_net
from ..core.cells import Head, ResNetBasicblock, edge_op, stem
from ..core.edges import CellEdge, derive_choices, edge_module, edges
from ..core.spaces import SearchSpace
from ..core.spaces.darts import DartsSpace
from ..errors import HwnasError
from ..train.loop import init_for_training

OpFactory = Callable[[str, int], nn.Module]


class MixedEdge(nn.Module):
    """All candidate ops of one edge; the output is their sum weighted by `weights` (DARTS's mixed
    op), plus `aux_skip` * x (DARTS-'s auxiliary skip connection) when it is non-zero."""

    def __init__(self, edge: CellEdge, make_op: OpFactory, channels: int):
        super().__init__()
        self.ops = nn.ModuleList(make_op(name, channels) for name in edge.ops)

    def forward(self, x: torch.Tensor, weights: torch.Tensor, aux_skip: float = 0.0) -> torch.Tensor:
        out = sum(w * op(x) for w, op in zip(weights, self.ops))
        return out + aux_skip * x if aux_skip else out


class MixedCell(nn.Module):
    """A cell of summing nodes (NB201's form): node 0 is the input, each later node the sum of its
    incoming mixed edges, the output the last node."""

    def __init__(self, edges: Sequence[CellEdge], make_op: OpFactory, channels: int):
        super().__init__()
        self.edges = tuple(edges)
        self.nodes = 1 + max(e.to for e in self.edges)
        self.mixed = nn.ModuleList(MixedEdge(e, make_op, channels) for e in self.edges)

    def forward(self, x: torch.Tensor, weights: Sequence[torch.Tensor], aux_skip: float = 0.0) -> torch.Tensor:
        nodes = [x]
        for j in range(1, self.nodes):
            nodes.append(sum(mixed(nodes[e.source], w, aux_skip)
                             for e, mixed, w in zip(self.edges, self.mixed, weights) if e.to == j))
        return nodes[-1]


class _AlphaSupernet(nn.Module):
    """What the training loop sees of a supernet: one alpha vector per edge (`self.alphas`, in the
    order of `self.edges`), the weights apart from them, and softmax(alpha) per edge."""

    alphas: nn.ParameterList

    def __init__(self):
        super().__init__()
        #: DARTS-PT's state (darts_pt.py): edge index -> the op index it is projected onto (its mixing
        #: weights one-hot), and the (edge, op) masked out for one perturbation check, or None
        self.projected: dict[int, int] = {}
        self.removed: tuple[int, int] | None = None

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

    def mixing_weights(self) -> list[torch.Tensor]:
        """What each edge's ops are weighted by in the forward pass: softmax(alpha), except that a
        projected edge is one-hot on its op and the `removed` op of an edge weighs 0 (the other ops
        keep their weights, as DARTS-PT masks an op)."""
        weights = self.probabilities()
        if not self.projected and self.removed is None:
            return weights
        out = []
        for i, w in enumerate(weights):
            if i in self.projected:
                w = F.one_hot(torch.tensor(self.projected[i]), len(w)).to(w.dtype)
            if self.removed is not None and self.removed[0] == i:
                w = w * (torch.arange(len(w)) != self.removed[1]).to(w.dtype)
            out.append(w)
        return out


class CellSupernet(_AlphaSupernet):
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
        self.edge_names = tuple(e.decision or e.name for e in self.edges)
        self.candidates = tuple(e.ops for e in self.edges)
        self.derived_ops = len(self.edges)
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
        self.alphas = nn.ParameterList(nn.Parameter(1e-3 * torch.randn(len(e.ops))) for e in self.edges)
        init_for_training(self, self.head.classifier)

    @classmethod
    def for_space(cls, space: SearchSpace, channels: Sequence[int], cells_per_stage: int) -> "CellSupernet":
        return cls(edges(space), space.num_classes, channels, cells_per_stage)

    def argmax_choices(self) -> dict[str, str]:
        """The derived cell: per edge the op of the largest alpha (NB201 keeps one op per edge)."""
        return {name: cands[int(a.detach().argmax())] for name, cands, a in zip(self.edge_names, self.candidates,
                                                                                self.alphas)}

    def decision_log_probs(self, choices: Mapping[str, str]) -> list[list[float]]:
        """log softmax(alpha) per decision of the space (an nb201 edge is a decision)."""
        return self.log_probabilities()

    def forward(self, x: torch.Tensor, aux_skip: float = 0.0) -> torch.Tensor:
        """Logits with every edge mixed by its `mixing_weights()`; `aux_skip`: DARTS-'s auxiliary skip weight."""
        weights = self.mixing_weights()
        x = self.stem(x)
        for block in self.cells:
            x = block(x, weights, aux_skip) if isinstance(block, MixedCell) else block(x)
        return self.head(x)


class MixedDartsCell(nn.Module):
    """A DARTS search cell at its plan: the two input preprocessings of the discrete cell, and on
    every one of its 14 edges a MixedEdge of all 8 ops (stride 2 from the inputs of a reduction
    cell); node j is the sum of its j incoming edges, the output concatenates nodes 2..5. DARTS-'s
    auxiliary skip is added on the stride-1 edges only (a stride-2 edge's input is at another
    shape; its skip_connect candidate is a FactorizedReduce)."""

    def __init__(self, space: SearchSpace, plan: darts_net.CellPlan, cell_edges: Sequence[CellEdge]):
        super().__init__()
        self.cell_type = plan.cell_type
        self.preprocess0 = darts_net.preprocess0(plan)
        self.preprocess1 = darts_net.preprocess1(plan)
        self.edges = tuple(cell_edges)
        self.strides = tuple(plan.edge_stride(e.source) for e in self.edges)
        self.mixed = nn.ModuleList(
            MixedEdge(e, lambda op, c, stride=stride: edge_module(space, op, c, stride), plan.channels)
            for e, stride in zip(self.edges, self.strides))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: Sequence[torch.Tensor],
                aux_skip: float = 0.0) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for node in darts_net.NODES:
            states.append(sum(mixed(states[e.source], w, aux_skip if stride == 1 else 0.0)
                              for e, stride, mixed, w in zip(self.edges, self.strides, self.mixed, weights)
                              if e.to == node))
        return torch.cat(states[2:], dim=1)


class DartsCellSupernet(_AlphaSupernet):
    """DARTS's search network over a darts space: `cells` mixed cells of width `channels`
    (DARTS searches with C=16 and 8 cells), the skeleton of hwnas.core.darts.DartsNetwork.
    Alphas: one logit vector per edge of `edges(space)`, 14 normal then 14 reduce, shared by every
    cell of that type (1e-3 x normal noise, as DARTS initialises them)."""

    def __init__(self, space: SearchSpace, channels: int = 16, cells: int = 8, resolution: int = 32):
        super().__init__()
        if channels < 2 or channels % 2 or cells < 3:
            raise HwnasError(f"a DARTS supernet needs an even width >= 2 and >= 3 cells, not {channels} and {cells}; "
                             "set --darts-channels (even) and --darts-cells")
        self.space = space
        self.edges = edges(space)
        self.edge_names = tuple(e.name for e in self.edges)
        self.candidates = tuple(e.ops for e in self.edges)
        self.derived_ops = 2 * len(darts_net.NODES) * len(darts_net.CELL_TYPES)
        self.channels, self.cells = channels, cells
        by_type = {t: [e for e in self.edges if e.cell == t] for t in darts_net.CELL_TYPES}
        self.network = darts_net.DartsNetwork(None, space.num_classes, channels, cells, resolution,
                                              make_cell=lambda plan: MixedDartsCell(space, plan,
                                                                                    by_type[plan.cell_type]))
        self.alphas = nn.ParameterList(nn.Parameter(1e-3 * torch.randn(len(e.ops))) for e in self.edges)
        init_for_training(self, self.network.classifier)

    def argmax_choices(self) -> dict[str, str]:
        """The derived cells by DARTS's rule: per node the 2 incoming edges whose strongest non-`none`
        op is strongest, each with that op."""
        return derive_choices(self.space, {e: p.detach().tolist() for e, p in zip(self.edges, self.probabilities())})

    def decision_log_probs(self, choices: Mapping[str, str]) -> list[list[float]]:
        """Per decision of the space, a log-probability per choice (what the budget repair trades
        latency against): an `op0`/`op1` decision, log softmax(alpha) of the edge it sits on in
        `choices`; an `inputs` decision (pair A_B), the log of the pair's share of the summed
        strengths (strongest non-`none` probability) of the node's incoming edges, s_A + s_B."""
        probs = {(e.cell, e.to, e.source): p.detach() for e, p in zip(self.edges, self.probabilities())}
        zero = self.space.zero_op
        live = [k for k, op in enumerate(darts_net.DARTS_OPS) if op != zero]
        result = []
        for name in self.space.decision_names:
            cell, node_text, slot = name.split(".")
            node = int(node_text[1:])
            if slot == "inputs":
                pairs = self.space.decision(name).choices
                strength = {s: float(probs[(cell, node, s)][live].max()) for s in range(node)}
                scores = [strength[int(a)] + strength[int(b)] for a, b in (p.split("_") for p in pairs)]
                total = sum(scores)
                result.append([math.log(v / total) for v in scores])
                continue
            inputs = choices.get(f"{cell}.n{node}.inputs", "0_1")
            source = int(inputs.split("_")[0 if slot == "op0" else 1])
            result.append(torch.log(probs[(cell, node, source)]).tolist())
        return result

    def forward(self, x: torch.Tensor, aux_skip: float = 0.0) -> torch.Tensor:
        """Logits with every edge mixed by its `mixing_weights()`; `aux_skip`: DARTS-'s auxiliary skip weight."""
        probs = self.mixing_weights()
        weights = {t: [p for e, p in zip(self.edges, probs) if e.cell == t] for t in darts_net.CELL_TYPES}
        net = self.network
        s0 = s1 = net.stem(x)
        for cell in net.cells:
            s0, s1 = s1, cell(s0, s1, weights[cell.cell_type], aux_skip)
        return net.classifier(torch.flatten(net.global_pooling(s1), 1))


def build_supernet(space: SearchSpace, channels: int, cells: int, resolution: int = 32) -> nn.Module:
    """The DARTS supernet of a cell space, the one place a space's skeleton is chosen: NB201's
    skeleton (stages of `channels`, 2x, 4x; `cells` mixed cells per stage) for nb201; DARTS's
    search network (width `channels`, 3 x `cells` + 2 cells: `cells` normal cells per stage, a
    reduction cell between stages) for the darts spaces."""
    if isinstance(space, DartsSpace):
        return DartsCellSupernet(space, channels, 3 * cells + 2, resolution)
    return CellSupernet.for_space(space, (channels, 2 * channels, 4 * channels), cells)
