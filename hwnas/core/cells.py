"""NAS-Bench-201's network in PyTorch (Dong & Yang, ICLR 2020): the cell space nb201's hwnas.core.build.

Module for module as NB201's reference code (D-X-Y/AutoDL-Projects, xautodl/models:
cell_infers/tiny_network.py, cell_infers/cells.py, cell_operations.py), with its attribute names,
so parameter counts equal the benchmark's and its state dicts load. One difference: a `none`
edge is a parameterless placeholder that is not run (NB201 multiplies its input by 0); a node
whose every input edge is `none` is a zero tensor, as in NB201.

The LUT measures the very modules the network is made of: `cell_op_module` builds the stem, a
cell edge op, a reduction block or the head for an OpInstance (spec: hwnas.core.ops.CellOpSpec).
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from .ops import CellOpSpec, HeadSpec, StemSpec

#: (to node, from node) of the cell's edges, in NB201's string order; decision `edge_{to}_{from}`
CELL_EDGES = tuple((j, i) for j in (1, 2, 3) for i in range(j))


class ReLUConvBN(nn.Module):
    """NB201's `nor_conv_KxK`: ReLU, conv (padding K//2, no bias), BN; held as `.op` like NB201's."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Pooling(nn.Module):
    """NB201's `avg_pool_3x3` at equal channels: 3x3 average, stride 1, padding not counted."""

    def __init__(self):
        super().__init__()
        self.op = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Zero(nn.Module):
    """NB201's `none`: the edge contributes nothing (the cell does not run it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def edge_op(name: str, channels: int) -> nn.Module:
    """One cell edge op of NB201 at `channels` in and out, stride 1."""
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name in ("nor_conv_1x1", "nor_conv_3x3"):
        return ReLUConvBN(channels, channels, int(name[-1]))
    if name == "avg_pool_3x3":
        return Pooling()
    raise ValueError(f"unknown NB201 op {name!r}")


class ResNetBasicblock(nn.Module):
    """NB201's reduction between stages: two ReLUConvBN 3x3 (the first stride 2) plus a shortcut
    of 2x2 average pooling and a 1x1 conv."""

    def __init__(self, c_in: int, c_out: int, stride: int = 2):
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1)
        self.downsample = nn.Sequential(
            nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
            nn.Conv2d(c_in, c_out, kernel_size=1, stride=1, padding=0, bias=False),
        )
        self.out_dim = c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class InferCell(nn.Module):
    """NB201's cell: node 0 is the input, node j the sum of op_{j,i}(node i) over i < j; the
    output is node 3. `layers` holds the six edge ops in NB201's string order."""

    def __init__(self, choices: Mapping[str, str], channels: int):
        super().__init__()
        self.ops = tuple(choices[f"edge_{j}_{i}"] for j, i in CELL_EDGES)
        self.layers = nn.ModuleList(edge_op(op, channels) for op in self.ops)
        self.out_dim = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for j in (1, 2, 3):
            terms = [self.layers[k](nodes[i]) for k, (to, i) in enumerate(CELL_EDGES)
                     if to == j and self.ops[k] != "none"]
            nodes.append(sum(terms[1:], terms[0]) if terms else x.mul(0.0))
        return nodes[3]


def stem(in_chs: int, channels: int) -> nn.Sequential:
    """NB201's stem: conv 3x3 (stride 1, no bias), BN."""
    return nn.Sequential(nn.Conv2d(in_chs, channels, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(channels))


class _Classifier(nn.Module):
    """NB201's lastact (BN, ReLU), global average pool and linear classifier."""

    def _init_head(self, in_chs: int, num_classes: int, drop_rate: float = 0.0) -> None:
        self.lastact = nn.Sequential(nn.BatchNorm2d(in_chs), nn.ReLU(inplace=True))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(in_chs, num_classes)
        self.drop_rate = float(drop_rate)

    def _classify(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.global_pooling(self.lastact(x)), 1)
        if self.drop_rate:
            x = nn.functional.dropout(x, self.drop_rate, self.training)
        return self.classifier(x)


class Head(_Classifier):
    """The network's head as a standalone module (a LUT op)."""

    def __init__(self, in_chs: int, num_classes: int):
        super().__init__()
        self._init_head(in_chs, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._classify(x)


class NB201Network(_Classifier):
    """NB201's TinyNetwork for one cell: stem; per stage `cells_per_stage` cells, with a
    ResNetBasicblock between stages; lastact, pool, (dropout,) classifier. Returns the logits only."""

    def __init__(self, choices: Mapping[str, str], num_classes: int, channels=(16, 32, 64), cells_per_stage: int = 5,
                 drop_rate: float = 0.0):
        super().__init__()
        self.stem = stem(3, channels[0])
        cells: list[nn.Module] = []
        c_prev = channels[0]
        for stage, c in enumerate(channels):
            if stage:
                cells.append(ResNetBasicblock(c_prev, c, 2))
            cells.extend(InferCell(choices, c) for _ in range(cells_per_stage))
            c_prev = c
        self.cells = nn.ModuleList(cells)
        self._init_head(c_prev, num_classes, drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x)
        return self._classify(x)


def cell_op_module(op) -> nn.Module:
    """The module an nb201 OpInstance measures: the stem, an edge op, a reduction block or the head."""
    if op.kind == "stem":
        return stem(op.in_chs, StemSpec.parse(op.spec).channels)
    if op.kind == "head":
        return Head(op.in_chs, HeadSpec.parse(op.spec).num_classes)
    spec = CellOpSpec.parse(op.spec)
    if spec.op == "resblock":
        return ResNetBasicblock(op.in_chs, spec.channels, spec.stride)
    return edge_op(spec.op, spec.channels)
