"""The DARTS / NASNet cell network in PyTorch (Liu et al., ICLR 2019): the cell space darts's network.

Module for module as DARTS's reference code (quark0/darts, cnn/operations.py, cnn/model.py
`NetworkCIFAR` without the auxiliary head), with its attribute names (`stem`, `cells.i.preprocess0`,
`cells.i._ops.k`, `classifier`), so parameter counts equal DARTS's and its state dicts load. Two
differences: drop-path is not applied, and a `none` edge is a parameterless placeholder that is not
run (DARTS multiplies its input by 0); a node whose two edges are both `none` is a zero tensor.

A cell takes the outputs of the two cells before it, c_{k-2} and c_{k-1} (states 0 and 1),
prepares them to the cell's width C (FactorizedReduce for c_{k-2} after a reduction cell, else a
1x1 ReLUConvBN), and computes 4 intermediate nodes (states 2..5), each the sum of two ops on two
earlier states; its output concatenates the 4 intermediate nodes (4C channels). Reduction cells,
at 1/3 and 2/3 of the depth, double C and run the edges from states 0 and 1 at stride 2.

`Genotype` is DARTS's record of a discrete cell pair; `CellPlan` one cell's position (its input
widths and map sizes); `darts_op` one edge op; `darts_op_module` the module an OpInstance of space
darts measures. `DartsNetwork(make_cell=...)` takes another cell (e.g. a DARTS search cell mixing
all ops on all 14 edges, built from hwnas.core.edges), so a supernet reuses the same skeleton.
"""

from __future__ import annotations

import ast
import hashlib
import json
from dataclasses import dataclass
from typing import Callable, Mapping

import torch
from torch import nn

from ..errors import ArchError
from .ops import DartsOpSpec, HeadSpec, StemSpec

#: DARTS's PRIMITIVES, in its order
DARTS_OPS = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3",
             "dil_conv_5x5")
CELL_TYPES = ("normal", "reduce")
#: intermediate nodes of a cell (DARTS's state indices; states 0 and 1 are c_{k-2}, c_{k-1})
NODES = (2, 3, 4, 5)
CONCAT = NODES
STEM_MULTIPLIER = 3


# --- ops (cnn/operations.py) ------------------------------------------------------------------------
class ReLUConvBN(nn.Module):
    """ReLU, conv (no bias), BN; held as `.op` like DARTS's."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int):
        super().__init__()
        self.op = nn.Sequential(nn.ReLU(inplace=False), nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False),
                                nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class DilConv(nn.Module):
    """ReLU, dilated depthwise conv, pointwise conv, BN."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, dilation: int):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel, stride, padding, dilation=dilation, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, padding=0, bias=False),
            nn.BatchNorm2d(c_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class SepConv(nn.Module):
    """Two stacked (ReLU, depthwise conv, pointwise conv, BN); only the first has the stride."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel, stride, padding, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_in, 1, padding=0, bias=False),
            nn.BatchNorm2d(c_in),
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel, 1, padding, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, padding=0, bias=False),
            nn.BatchNorm2d(c_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Zero(nn.Module):
    """`none`: zeros at the op's output shape (the cell does not run it unless a node has no other input)."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, ::self.stride, ::self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """ReLU, two stride-2 1x1 convs (the second on the map shifted by one pixel), concatenated, BN."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        if c_out % 2:
            raise ValueError(f"FactorizedReduce needs an even output width, not {c_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, padding=0, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


def darts_op(name: str, channels: int, stride: int = 1) -> nn.Module:
    """One DARTS edge op at `channels` in and out and `stride` (DARTS's OPS table)."""
    if name == "none":
        return Zero(stride)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    if name == "max_pool_3x3":
        return nn.MaxPool2d(3, stride=stride, padding=1)
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(channels, channels)
    if name in ("sep_conv_3x3", "sep_conv_5x5"):
        kernel = int(name[-1])
        return SepConv(channels, channels, kernel, stride, kernel // 2)
    if name in ("dil_conv_3x3", "dil_conv_5x5"):
        kernel = int(name[-1])
        return DilConv(channels, channels, kernel, stride, kernel - 1, 2)
    raise ValueError(f"unknown DARTS op {name!r}; use one of {', '.join(DARTS_OPS)}")


# --- the genotype -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Genotype:
    """DARTS's discrete cell pair: per cell type, 8 (op, input state) pairs, two per intermediate
    node in node order, and the states its output concatenates (here always 2, 3, 4, 5)."""

    normal: tuple[tuple[str, int], ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[tuple[str, int], ...]
    reduce_concat: tuple[int, ...]

    def __post_init__(self):
        for field in ("normal", "reduce"):
            object.__setattr__(self, field, tuple((str(op), int(i)) for op, i in getattr(self, field)))
        for field in ("normal_concat", "reduce_concat"):
            object.__setattr__(self, field, tuple(int(i) for i in getattr(self, field)))
        self.check()

    def check(self) -> None:
        """ArchError naming the first pair this space cannot hold."""
        for cell in CELL_TYPES:
            pairs, concat = getattr(self, cell), getattr(self, f"{cell}_concat")
            if len(pairs) != 2 * len(NODES):
                raise ArchError(f"genotype {cell} has {len(pairs)} (op, input) pairs; a cell of {len(NODES)} nodes "
                                f"needs {2 * len(NODES)}, two per node")
            if concat != CONCAT:
                raise ArchError(f"genotype {cell}_concat is {list(concat)}; this space concatenates all intermediate "
                                f"nodes, {list(CONCAT)}")
            for k, (op, source) in enumerate(pairs):
                node = NODES[k // 2]
                if op not in DARTS_OPS:
                    raise ArchError(f"genotype {cell}: op {op!r} is not one of {', '.join(DARTS_OPS)}")
                if not 0 <= source < node:
                    raise ArchError(f"genotype {cell}: node {node} takes input {source}; use a state 0..{node - 1}")
            for node in NODES:
                (_, a), (_, b) = self.node(cell, node)
                if a == b:
                    raise ArchError(f"genotype {cell}: node {node} takes state {a} twice; its two inputs must differ "
                                    "(DARTS keeps the two strongest of distinct edges)")

    def node(self, cell: str, node: int) -> tuple[tuple[str, int], tuple[str, int]]:
        """The two (op, input) pairs of an intermediate node (2..5) of `cell` ('normal' or 'reduce')."""
        k = 2 * NODES.index(node)
        pairs = getattr(self, cell)
        return pairs[k], pairs[k + 1]

    def canonical(self) -> "Genotype":
        """The same cells with each node's pairs ordered by input (the network computes the same)."""
        def ordered(cell):
            return tuple(pair for node in NODES for pair in sorted(self.node(cell, node), key=lambda p: p[1]))
        return Genotype(ordered("normal"), CONCAT, ordered("reduce"), CONCAT)

    def to_choices(self) -> dict[str, str]:
        """The darts space's choices: per cell type and node 3..5, its inputs `A_B` (A < B); per node
        2..5, `op0` on the lower input and `op1` on the higher."""
        choices = {}
        for cell in CELL_TYPES:
            for node in NODES:
                (op0, a), (op1, b) = sorted(self.node(cell, node), key=lambda p: p[1])
                if node != NODES[0]:
                    choices[f"{cell}.n{node}.inputs"] = f"{a}_{b}"
                choices[f"{cell}.n{node}.op0"] = op0
                choices[f"{cell}.n{node}.op1"] = op1
        return choices

    @classmethod
    def from_choices(cls, choices: Mapping[str, str]) -> "Genotype":
        """The canonical genotype of a darts architecture's choices (validated by the space)."""
        cells = {}
        for cell in CELL_TYPES:
            pairs = []
            for node in NODES:
                a, b = (0, 1) if node == NODES[0] else map(int, choices[f"{cell}.n{node}.inputs"].split("_"))
                pairs += [(choices[f"{cell}.n{node}.op0"], a), (choices[f"{cell}.n{node}.op1"], b)]
            cells[cell] = tuple(pairs)
        return cls(cells["normal"], CONCAT, cells["reduce"], CONCAT)

    def to_dict(self) -> dict:
        return {"normal": [list(p) for p in self.normal], "normal_concat": list(self.normal_concat),
                "reduce": [list(p) for p in self.reduce], "reduce_concat": list(self.reduce_concat)}

    @property
    def hash(self) -> str:
        """12 hex digits of the canonical form: genotypes that build the same network share it."""
        text = json.dumps(self.canonical().to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]

    def __str__(self) -> str:
        """DARTS's own spelling, `Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=[2, 3, 4, 5], ...)`."""
        return (f"Genotype(normal={list(self.normal)}, normal_concat={list(self.normal_concat)}, "
                f"reduce={list(self.reduce)}, reduce_concat={list(self.reduce_concat)})")


def parse_genotype(text: str) -> Genotype:
    """A Genotype from DARTS's spelling (`Genotype(normal=[...], normal_concat=range(2, 6), ...)`, as its
    genotypes.py writes it); ArchError naming what is wrong and the expected form."""
    example = "Genotype(normal=[('sep_conv_3x3', 0), ...], normal_concat=[2, 3, 4, 5], reduce=[...], reduce_concat=[2, 3, 4, 5])"
    try:
        call = ast.parse(str(text).strip(), mode="eval").body
    except SyntaxError:
        call = None
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "Genotype"
            and not call.args and {k.arg for k in call.keywords} == {"normal", "normal_concat", "reduce", "reduce_concat"}):
        raise ArchError(f"{str(text)[:60]!r} is not a DARTS genotype; write {example}")
    fields = {}
    for keyword in call.keywords:
        value = keyword.value
        try:
            if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "range":
                fields[keyword.arg] = tuple(range(*(ast.literal_eval(a) for a in value.args)))
            else:
                fields[keyword.arg] = tuple(ast.literal_eval(value))
        except (ValueError, TypeError):
            raise ArchError(f"genotype field {keyword.arg!r} is not a literal list; write {example}") from None
    try:
        return Genotype(**fields)
    except (TypeError, ValueError):
        raise ArchError(f"genotype fields must be lists of (op, input) pairs and of ints; write {example}") from None


# --- the network (cnn/model.py) ---------------------------------------------------------------------
@dataclass(frozen=True)
class CellPlan:
    """One cell's place in the network: its index, whether it and the cell before it reduce, the
    widths of its inputs c_{k-2}, c_{k-1} and of its nodes (`channels`; output 4x that), and the map
    sizes of its two inputs and of its output."""

    index: int
    reduction: bool
    reduction_prev: bool
    c_prev_prev: int
    c_prev: int
    channels: int
    hw_prev_prev: int
    hw_prev: int
    hw_out: int

    @property
    def cell_type(self) -> str:
        return "reduce" if self.reduction else "normal"

    @property
    def out_chs(self) -> int:
        return len(CONCAT) * self.channels

    def edge_stride(self, source: int) -> int:
        """Stride of an edge from state `source`: 2 from the cell's inputs in a reduction cell, else 1."""
        return 2 if self.reduction and source < 2 else 1

    def edge_hw(self, source: int) -> int:
        """Input map size of an edge from state `source` (after preprocessing, states 0, 1 are at hw_prev)."""
        return self.hw_prev if source < 2 else self.hw_out


def cell_plans(channels: int, cells: int, resolution: int) -> tuple[CellPlan, ...]:
    """DARTS's NetworkCIFAR layout: a 3C-wide stride-1 stem, then `cells` cells, the ones at
    cells//3 and 2*cells//3 reducing (C doubles, the map halves)."""
    c_pp = c_p = STEM_MULTIPLIER * channels
    hw_pp = hw_p = resolution
    c, reduction_prev, plans = channels, False, []
    for i in range(cells):
        reduction = i in (cells // 3, 2 * cells // 3)
        c = 2 * c if reduction else c
        hw_out = (hw_p + 1) // 2 if reduction else hw_p
        plans.append(CellPlan(i, reduction, reduction_prev, c_pp, c_p, c, hw_pp, hw_p, hw_out))
        c_pp, c_p, hw_pp, hw_p, reduction_prev = c_p, len(CONCAT) * c, hw_p, hw_out, reduction
    return tuple(plans)


def preprocess0(plan: CellPlan) -> nn.Module:
    """How a cell prepares c_{k-2}: FactorizedReduce after a reduction cell (it is at twice the map
    size), else a 1x1 ReLUConvBN."""
    if plan.reduction_prev:
        return FactorizedReduce(plan.c_prev_prev, plan.channels)
    return ReLUConvBN(plan.c_prev_prev, plan.channels, 1, 1, 0)


def preprocess1(plan: CellPlan) -> nn.Module:
    """How a cell prepares c_{k-1}: a 1x1 ReLUConvBN."""
    return ReLUConvBN(plan.c_prev, plan.channels, 1, 1, 0)


class Cell(nn.Module):
    """A discrete DARTS cell of a genotype at its plan: `_ops` holds the 8 edge ops in the
    genotype's order (a `none` edge a parameterless Zero)."""

    def __init__(self, genotype: Genotype, plan: CellPlan):
        super().__init__()
        self.preprocess0 = preprocess0(plan)
        self.preprocess1 = preprocess1(plan)
        pairs = getattr(genotype, plan.cell_type)
        self._names = tuple(op for op, _ in pairs)
        self._indices = tuple(source for _, source in pairs)
        self._concat = tuple(getattr(genotype, f"{plan.cell_type}_concat"))
        self._ops = nn.ModuleList(darts_op(op, plan.channels, plan.edge_stride(source)) for op, source in pairs)
        self.multiplier = len(self._concat)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for step in range(len(NODES)):
            ks = (2 * step, 2 * step + 1)
            terms = [self._ops[k](states[self._indices[k]]) for k in ks if self._names[k] != "none"]
            if not terms:  # both edges `none`: zeros at the node's shape
                terms = [self._ops[ks[0]](states[self._indices[ks[0]]])]
            states.append(terms[0] + terms[1] if len(terms) == 2 else terms[0])
        return torch.cat([states[i] for i in self._concat], dim=1)


def stem(in_chs: int, channels: int) -> nn.Sequential:
    """DARTS's CIFAR stem: conv 3x3 (stride 1, no bias) to 3C, BN."""
    return nn.Sequential(nn.Conv2d(in_chs, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))


class Head(nn.Module):
    """DARTS's head as a standalone module (a LUT op): global average pool, linear classifier."""

    def __init__(self, in_chs: int, num_classes: int, drop_rate: float = 0.0):
        super().__init__()
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(in_chs, num_classes)
        self.drop_rate = float(drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.global_pooling(x), 1)
        if self.drop_rate:
            x = nn.functional.dropout(x, self.drop_rate, self.training)
        return self.classifier(x)


class DartsNetwork(Head):
    """DARTS's NetworkCIFAR (no auxiliary head, no drop-path): stem; `cells` cells, s0, s1 = s1,
    cell(s0, s1); global pool, (dropout,) classifier. Returns the logits only. `make_cell(plan)`
    builds each cell (default: the genotype's discrete Cell); any module with `forward(s0, s1)`
    returning `plan.out_chs` channels at `plan.hw_out` fits."""

    def __init__(self, genotype: Genotype | None, num_classes: int, channels: int = 36, cells: int = 20,
                 resolution: int = 32, drop_rate: float = 0.0,
                 make_cell: Callable[[CellPlan], nn.Module] | None = None):
        plans = cell_plans(channels, cells, resolution)
        super().__init__(plans[-1].out_chs, num_classes, drop_rate)
        if make_cell is None:
            if genotype is None:
                raise ValueError("DartsNetwork needs a genotype or make_cell")
            make_cell = lambda plan: Cell(genotype, plan)  # noqa: E731
        self.stem = stem(3, STEM_MULTIPLIER * channels)
        self.cells = nn.ModuleList(make_cell(plan) for plan in plans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return super().forward(s1)


def darts_op_module(op) -> nn.Module:
    """The module a darts OpInstance measures: the stem, an input preprocessing, an edge op or the head."""
    if op.kind == "stem":
        return stem(op.in_chs, StemSpec.parse(op.spec).channels)
    if op.kind == "head":
        return Head(op.in_chs, HeadSpec.parse(op.spec).num_classes)
    spec = DartsOpSpec.parse(op.spec)
    if spec.op == "relu_conv_bn":
        return ReLUConvBN(op.in_chs, spec.channels, 1, 1, 0)
    if spec.op == "factorized_reduce":
        return FactorizedReduce(op.in_chs, spec.channels)
    return darts_op(spec.op, spec.channels, spec.stride)


def genotype_document(genotype: Genotype) -> dict:
    """A genotype for people: DARTS's spelling, and each node as the sum of its non-`none` edges."""
    doc: dict = {"genotype": str(genotype)}
    for cell in CELL_TYPES:
        lines = []
        for node in NODES:
            terms = [f"{op}(state {i})" for op, i in genotype.node(cell, node) if op != "none"]
            lines.append(f"node {node} = {' + '.join(terms) or '0'}")
        doc[cell] = lines
    doc["output"] = "concat(node 2, node 3, node 4, node 5)"
    return doc

