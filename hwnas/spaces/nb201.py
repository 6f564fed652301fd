"""NAS-Bench-201's cell space (Dong & Yang, ICLR 2020): 6 edges of a 4-node cell, 5 ops per edge.

Decisions are the edges, `edge_J_I` the edge into node J from node I; choices are NB201's op
names. An architecture reads and writes NB201's string form, `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`
(node 1's input edges, then node 2's, then node 3's; `op~i` is the edge from node i).
"""

from __future__ import annotations

import re
from typing import Mapping

from ..errors import ArchError, SpaceError
from .base import Decision, SearchSpace

#: NB201's op names, in its order
NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
#: (decision name, to node, from node), in NB201's string order
EDGES = tuple((f"edge_{j}_{i}", j, i) for j in (1, 2, 3) for i in range(j))
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

    def arch_def(self, choices):  # filled in by the model integration
        raise SpaceError("space nb201 builds no timm arch_def yet")

    def candidate_blocks(self):
        raise SpaceError("space nb201 has no profiled ops yet")

    def final_shapes(self):
        raise SpaceError("space nb201 has no profiled ops yet")
