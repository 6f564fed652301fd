"""NAS-Bench-201's cell space (Dong & Yang, ICLR 2020): 6 edges of a 4-node cell, 5 ops per edge.

Decisions are the edges, `edge_J_I` the edge into node J from node I; choices are NB201's op
names. An architecture reads and writes NB201's string form, `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`
(node 1's input edges, then node 2's, then node 3's; `op~i` is the edge from node i).

The network is NB201's own (hwnas.core.cells), not a timm arch_def. Its LUT ops are the stem, every
non-`none` edge op of every cell at its stage's shape (`nb201_nor_conv_3x3_c16`), the two
reduction blocks (`nb201_resblock_c32`) and the head (lastact, pool, classifier).
"""

from __future__ import annotations

import re
from typing import Mapping

from torch import nn

from ..build import BuildConfig
from ..cells import CELL_EDGES, NB201Network
from ...errors import ArchError, SpaceError
from ..ops import CellOpSpec, OpKind, StemSpec
from .base import Decision, OpInstance, SearchSpace, _unique, conv_out

#: NB201's op names, in its order
NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
#: (decision name, to node, from node), in NB201's string order
EDGES = tuple((f"edge_{j}_{i}", j, i) for j, i in CELL_EDGES)
_NODE = re.compile(r"^\|(?:[a-z0-9_]+~\d+\|)+$")


def nb201_string(choices: Mapping[str, str]) -> str:
    """The NB201 string of an edge -> op mapping."""
    nodes = []
    for j in (1, 2, 3):
        nodes.append("|" + "|".join(f"{choices[f'edge_{j}_{i}']}~{i}" for i in range(j)) + "|")
    return "+".join(nodes)


def parse_nb201_string(text: str) -> dict[str, str]:
    """edge -> op of an NB201 string; ArchError naming what is wrong and the expected form."""
    example = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
    text = str(text).strip()
    nodes = text.split("+")
    if len(nodes) != 3 or not all(_NODE.match(node) for node in nodes):
        raise ArchError(f"{text!r} is not an NB201 string of 3 nodes; write e.g. '{example}'")
    choices: dict[str, str] = {}
    for j, node in enumerate(nodes, start=1):
        edges = node.strip("|").split("|")
        if len(edges) != j:
            raise ArchError(f"NB201 string {text!r}: node {j} needs {j} input edge(s), got {len(edges)}; "
                            f"write e.g. '{example}'")
        for i, edge in enumerate(edges):
            op, _, source = edge.partition("~")
            if int(source) != i:
                raise ArchError(f"NB201 string {text!r}: node {j}'s edge {i + 1} must come from node {i}, "
                                f"not {source}; write e.g. '{example}'")
            if op not in NB201_OPS:
                raise ArchError(f"NB201 string {text!r}: op {op!r} is not one of {', '.join(NB201_OPS)}")
            choices[f"edge_{j}_{i}"] = op
    return choices


class NB201Space(SearchSpace):
    """NAS-Bench-201's cell, stacked in its macro skeleton: stem conv3x3 c16 + BN; 3 stages of 5
    cells at C = 16/32/64 with a residual reduction block between stages; BN, ReLU, global pool,
    linear. 32x32 input (CIFAR-10/100) or 16x16 (ImageNet16-120)."""

    name = "nb201"
    description = "NAS-Bench-201 cell: 6 edges x {none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3}"
    default_resolution = 32
    default_num_classes = 10
    min_resolution = 16
    resolution_step = 16
    channels = (16, 32, 64)
    cells_per_stage = 5
    #: the cell as a DAG (decision, to node, from node) and the op that cuts an edge (path encodings)
    cell_edges = EDGES
    zero_op = "none"

    def __init__(self, resolution: int | None = None, num_classes: int | None = None):
        super().__init__(resolution, num_classes)
        self.decisions = tuple(Decision(name, NB201_OPS) for name, _, _ in EDGES)
        self.build_config = BuildConfig(stem_size=self.channels[0], num_features=self.channels[-1], family="nb201")

    def arch_def(self, choices):
        raise SpaceError(
            "space nb201 is a cell space built as NB201's own network, not a timm arch_def, so it has no block "
            "list, detection or segmentation backbone; use a timm space (fbnet, mnasnet, proxylessnas, mobilenetv3) "
            "for those"
        )

    def build_model(self, choices: Mapping[str, str], drop_rate: float = 0.0) -> nn.Module:
        return NB201Network(choices, self.num_classes, self.channels, self.cells_per_stage, drop_rate=drop_rate)

    def stem_op(self) -> OpInstance:
        return OpInstance(OpKind.STEM, StemSpec(self.channels[0], 3, 1).text, 3, self.resolution, self.resolution)

    def _stages(self):
        """(reduction block before the stage or None, channels, map size) per stage: the reduction
        before stages 2 and 3 halves the map and doubles the channels."""
        c_prev, hw_prev = self.channels[0], self.resolution
        for stage, c in enumerate(self.channels):
            reduction = None
            if stage:
                reduction = OpInstance(OpKind.BLOCK, CellOpSpec("resblock", c).text, c_prev, hw_prev, hw_prev)
                hw_prev = conv_out(hw_prev, 2)
            yield reduction, c, hw_prev
            c_prev = c

    def arch_ops(self, choices: Mapping[str, str]) -> list[OpInstance]:
        """Stem; per stage the reduction block (stages 2, 3) and each cell's non-`none` edge ops;
        head. Edge ops are summed as if run one after another (the cell's additions are left out)."""
        edge_ops = [choices[name] for name, _, _ in EDGES if choices[name] != "none"]
        ops = [self.stem_op()]
        for reduction, c, hw in self._stages():
            ops.extend([reduction] if reduction else [])
            ops.extend([self._edge(op, c, hw) for op in edge_ops] * self.cells_per_stage)
        ops.append(self.head_op(*self._final_shape()))
        return ops

    def candidate_blocks(self) -> list[OpInstance]:
        blocks = []
        for reduction, c, hw in self._stages():
            blocks.extend([reduction] if reduction else [])
            blocks.extend(self._edge(op, c, hw) for op in NB201_OPS if op != "none")
        return _unique(blocks)

    def final_shapes(self) -> set[tuple[int, int, int]]:
        return {self._final_shape()}

    def _final_shape(self) -> tuple[int, int, int]:
        *_, (_, c, hw) = self._stages()
        return (c, hw, hw)

    def _edge(self, op: str, channels: int, hw: int) -> OpInstance:
        return OpInstance(OpKind.BLOCK, CellOpSpec(op, channels).text, channels, hw, hw)
