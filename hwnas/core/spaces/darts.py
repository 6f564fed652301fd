"""The DARTS / NASNet cell space (Liu et al., ICLR 2019): a normal and a reduction cell of 4
intermediate nodes, each the sum of 2 ops (of DARTS's 8) on 2 distinct earlier states, stacked as
DARTS's CIFAR network (hwnas.core.darts).

Decisions, per cell type `normal` / `reduce` (states 0, 1 are the cell inputs c_{k-2}, c_{k-1};
2..5 the intermediate nodes): `{cell}.n{j}.inputs` for nodes 3..5, the two states the node reads,
`A_B` with A < B (node 2 always reads 0 and 1); `{cell}.n{j}.op0` and `.op1`, the ops on the lower
and the higher input. Every assignment is a valid cell: 22 decisions, 10^18.96 architectures.
`hwnas.core.darts.Genotype` converts to and from DARTS's (op, input) pairs.

Sizes: `darts` is DARTS's evaluation network (C=36, 20 cells: 3.35M parameters for DARTS-V2 on
CIFAR-10); `darts_small` (C=16, 8 cells) is CPU-sized for searches; `darts_tiny` (C=4, 5 cells) is
for tests. `DartsSpace.sized(channels, cells)` gives another size.

LUT ops: the stem, per cell its two input preprocessings and each non-`none` edge op at its shape
(`darts_sep_conv_3x3_c36_s1` at 36x32x32; stride 2 on a reduction cell's edges from its inputs),
and the head (pool, classifier). A prediction sums them; the cell's additions and concat are left out.
"""

from __future__ import annotations

from itertools import combinations
from typing import Mapping

from torch import nn

from ..build import BuildConfig
from ..darts import CELL_TYPES, CONCAT, DARTS_OPS, NODES, STEM_MULTIPLIER, CellPlan, DartsNetwork, Genotype, cell_plans
from ...errors import SpaceError
from ..ops import DartsOpSpec, OpKind, StemSpec
from .base import Decision, OpInstance, SearchSpace, _unique


def input_choices(node: int) -> tuple[str, ...]:
    """The `inputs` choices of intermediate node `node`: every pair of distinct earlier states, `A_B`."""
    return tuple(f"{a}_{b}" for a, b in combinations(range(node), 2))


class DartsSpace(SearchSpace):
    """DARTS's cell pair in its CIFAR network: stem conv3x3 to 3C + BN; `cells` cells, reduction
    cells at 1/3 and 2/3 of the depth; global pool, linear. 32x32 input (CIFAR-10)."""

    name = "darts"
    description = "DARTS cells (normal, reduce): 4 nodes x 2 of 8 ops on 2 earlier states; C=36, 20 cells"
    default_resolution = 32
    default_num_classes = 10
    min_resolution = 8
    resolution_step = 4  # two reductions keep every map even (FactorizedReduce needs it)
    channels = 36
    cells = 20
    zero_op = "none"

    def __init__(self, resolution: int | None = None, num_classes: int | None = None):
        super().__init__(resolution, num_classes)
        if self.channels % 2 or self.channels < 2 or self.cells < 3:
            raise SpaceError(f"a DARTS network needs an even C >= 2 and >= 3 cells, not C={self.channels}, "
                             f"{self.cells} cells; choose another size")
        decisions = []
        for cell in CELL_TYPES:
            for node in NODES:
                if node != NODES[0]:
                    decisions.append(Decision(f"{cell}.n{node}.inputs", input_choices(node)))
                decisions += [Decision(f"{cell}.n{node}.op0", DARTS_OPS), Decision(f"{cell}.n{node}.op1", DARTS_OPS)]
        self.decisions = tuple(decisions)
        self.plans: tuple[CellPlan, ...] = cell_plans(self.channels, self.cells, self.resolution)
        self.build_config = BuildConfig(stem_size=STEM_MULTIPLIER * self.channels, num_features=self.plans[-1].out_chs,
                                        family="darts", stem_stride=1)

    @classmethod
    def sized(cls, channels: int, cells: int, name: str | None = None) -> type["DartsSpace"]:
        """A DARTS space class of another size (C, cells), named `name` (default `darts_c{C}_l{cells}`)."""
        name = name or f"darts_c{channels}_l{cells}"
        description = cls.description.rsplit(";", 1)[0] + f"; C={channels}, {cells} cells"
        return type(f"DartsSpace_{name}", (cls,), {"name": name, "channels": int(channels), "cells": int(cells),
                                                    "description": description})

    def genotype(self, choices: Mapping[str, str]) -> Genotype:
        """The canonical DARTS genotype of validated choices."""
        return Genotype.from_choices(choices)

    def arch_def(self, choices):
        raise SpaceError(
            f"space {self.name} is a cell space built as DARTS's own network, not a timm arch_def, so it has no "
            "block list, detection or segmentation backbone; use a timm space (fbnet, mnasnet, proxylessnas, "
            "mobilenetv3) for those"
        )

    def build_model(self, choices: Mapping[str, str], drop_rate: float = 0.0) -> nn.Module:
        return DartsNetwork(self.genotype(choices), self.num_classes, self.channels, self.cells, self.resolution,
                            drop_rate=drop_rate)

    def stem_op(self) -> OpInstance:
        stem = StemSpec(self.build_config.stem_size, 3, 1)
        return OpInstance(OpKind.STEM, stem.text, 3, self.resolution, self.resolution)

    @staticmethod
    def preprocess_ops(plan: CellPlan) -> tuple[OpInstance, OpInstance]:
        """The LUT ops preparing a cell's inputs c_{k-2} and c_{k-1}."""
        if plan.reduction_prev:
            op0 = OpInstance(OpKind.BLOCK, DartsOpSpec("factorized_reduce", plan.channels, 2).text,
                             plan.c_prev_prev, plan.hw_prev_prev, plan.hw_prev_prev)
        else:
            op0 = OpInstance(OpKind.BLOCK, DartsOpSpec("relu_conv_bn", plan.channels, 1).text,
                             plan.c_prev_prev, plan.hw_prev_prev, plan.hw_prev_prev)
        op1 = OpInstance(OpKind.BLOCK, DartsOpSpec("relu_conv_bn", plan.channels, 1).text,
                         plan.c_prev, plan.hw_prev, plan.hw_prev)
        return op0, op1

    @staticmethod
    def edge_op(plan: CellPlan, op: str, source: int) -> OpInstance:
        """The LUT op of edge op `op` from state `source` in the cell at `plan`."""
        hw = plan.edge_hw(source)
        return OpInstance(OpKind.BLOCK, DartsOpSpec(op, plan.channels, plan.edge_stride(source)).text,
                          plan.channels, hw, hw)

    def arch_ops(self, choices: Mapping[str, str]) -> list[OpInstance]:
        """Stem; per cell its two preprocessings and its non-`none` edge ops; head."""
        genotype = self.genotype(choices)
        ops = [self.stem_op()]
        for plan in self.plans:
            ops.extend(self.preprocess_ops(plan))
            ops.extend(self.edge_op(plan, op, source) for op, source in getattr(genotype, plan.cell_type)
                       if op != "none")
        ops.append(self.head_op(*self._final_shape()))
        return ops

    def candidate_blocks(self) -> list[OpInstance]:
        blocks = []
        for plan in self.plans:
            blocks.extend(self.preprocess_ops(plan))
            sources = (0, 2) if plan.reduction else (0,)  # stride 2 from the inputs, 1 from the nodes
            blocks.extend(self.edge_op(plan, op, source) for source in sources for op in DARTS_OPS if op != "none")
        return _unique(blocks)

    def final_shapes(self) -> set[tuple[int, int, int]]:
        return {self._final_shape()}

    def _final_shape(self) -> tuple[int, int, int]:
        last = self.plans[-1]
        return (last.out_chs, last.hw_out, last.hw_out)


DartsSmallSpace = DartsSpace.sized(16, 8, "darts_small")
DartsTinySpace = DartsSpace.sized(4, 5, "darts_tiny")

__all__ = ["CONCAT", "DartsSmallSpace", "DartsSpace", "DartsTinySpace", "input_choices"]
