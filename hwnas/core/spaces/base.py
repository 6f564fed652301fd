"""What every search space is: named decisions, a map from choices to a network (a timm arch_def
that hwnas.core.build builds, or for a cell space its own network), and the concrete ops (block
string + input shape) that any of its architectures can contain."""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterable, Mapping

from torch import nn

from ..build import BuildConfig, build_model, decode_block
from ...errors import ArchError
from ..ops import CellOpSpec, DartsOpSpec, HeadSpec, OpKind, StemSpec, is_cell_op, parse_cell_op

SKIP = "skip"


@dataclass(frozen=True)
class Decision:
    """One label -> choice decision of a space (NNI-style flat mapping)."""

    name: str
    choices: tuple[str, ...]


@dataclass(frozen=True)
class OpInstance:
    """An op at its concrete input shape: a trunk block, the stem or the head.

    `spec` is a timm block string (or a cell space's op, `nb201_nor_conv_3x3_c16`,
    `darts_sep_conv_3x3_c36_s1`) for kind 'block',
    `c{stem}_k3_s2` for the stem, and `f{num_features}_n{num_classes}` for the head. Two ops
    with equal fields are the same module at the same shape and are measured once.
    """

    kind: OpKind
    spec: str
    in_chs: int
    in_h: int
    in_w: int

    def __post_init__(self):
        object.__setattr__(self, "kind", OpKind.parse(self.kind))

    @property
    def stem(self) -> StemSpec:
        """The parsed stem spec (ValueError for other kinds)."""
        return StemSpec.parse(self.spec)

    @property
    def head(self) -> HeadSpec:
        """The parsed head spec: features and class count (ValueError for other kinds)."""
        return HeadSpec.parse(self.spec)

    def input_shape(self, batch: int = 1) -> tuple[int, int, int, int]:
        return (batch, self.in_chs, self.in_h, self.in_w)

    def out_hw(self) -> tuple[int, int]:
        stride = 1
        if self.kind is OpKind.STEM:
            stride = self.stem.stride
        elif self.kind is OpKind.BLOCK:
            stride = block_stride(self.spec)
        return conv_out(self.in_h, stride), conv_out(self.in_w, stride)

    def out_chs(self) -> int:
        if self.kind is OpKind.BLOCK:
            return block_out_chs(self.spec)
        if self.kind is OpKind.STEM:
            return self.stem.channels
        return self.head.num_classes

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.spec}@{self.in_chs}x{self.in_h}x{self.in_w}"


def conv_out(size: int, stride: int) -> int:
    """Output size of an odd-kernel conv with 'same'-style symmetric padding k//2."""
    return (size - 1) // stride + 1


@lru_cache(maxsize=None)
def block_out_chs(block_str: str) -> int:
    if is_cell_op(block_str):
        return _cell_spec(block_str).channels
    return decode_block(block_str)[0]["out_chs"]


@lru_cache(maxsize=None)
def block_stride(block_str: str) -> int:
    if is_cell_op(block_str):
        return _cell_spec(block_str).stride
    return decode_block(block_str)[0]["stride"]


def _cell_spec(block_str: str) -> CellOpSpec | DartsOpSpec:
    try:
        return parse_cell_op(block_str)
    except ValueError as exc:
        raise ArchError(str(exc)) from None


class SearchSpace(ABC):
    """A search space at one input resolution and class count.

    Subclasses set `name`, `description`, `default_resolution`, `default_num_classes`,
    build `self.decisions` and `self.build_config` in `__init__`, and implement
    `arch_def` and `candidate_blocks`. A space whose networks are not timm arch_defs (the cell
    spaces nb201, darts) overrides `build_model` and `arch_ops` instead, and refuses `arch_def`.
    """

    name: str = ""
    description: str = ""
    default_resolution: int = 224
    default_num_classes: int = 1000
    min_resolution: int = 32
    #: input resolutions must be multiples of this (five stride-2 stages: 32 keeps every map even)
    resolution_step: int = 32

    def __init__(self, resolution: int | None = None, num_classes: int | None = None):
        from ...errors import SpaceError

        self.resolution = int(self.default_resolution if resolution is None else resolution)
        self.num_classes = int(self.default_num_classes if num_classes is None else num_classes)
        if self.resolution < self.min_resolution or self.resolution % self.resolution_step:
            raise SpaceError(
                f"resolution {self.resolution} is not usable for space {self.name!r}; "
                f"use a multiple of {self.resolution_step} that is at least {self.min_resolution}"
            )
        if self.num_classes < 1:
            raise SpaceError(f"num_classes must be >= 1, got {self.num_classes}")
        self.decisions: tuple[Decision, ...] = ()
        self.build_config: BuildConfig

    # --- what subclasses define -------------------------------------------------------------
    @abstractmethod
    def arch_def(self, choices: Mapping[str, str]) -> list[list[str]]:
        """timm arch_def (stages of repeat-1 block strings) for validated choices."""

    @abstractmethod
    def candidate_blocks(self) -> list[OpInstance]:
        """Every trunk block, at its input shape, that some architecture of the space contains."""

    # --- derived ----------------------------------------------------------------------------
    @property
    def decision_names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.decisions)

    def decision(self, name: str) -> Decision:
        for d in self.decisions:
            if d.name == name:
                return d
        raise KeyError(name)

    def log10_size(self) -> float:
        """log10 of the number of distinct choice assignments."""
        return sum(math.log10(len(d.choices)) for d in self.decisions)

    def validate(self, choices: Mapping[str, str]) -> None:
        """Raise ArchError naming the first decision that is missing, unknown or out of range."""
        known = set(self.decision_names)
        unknown = sorted(set(choices) - known)
        if unknown:
            raise ArchError(
                f"decision {unknown[0]!r} is not part of space {self.name!r}; "
                f"see `hwnas space show {self.name}` for its decisions"
            )
        for d in self.decisions:
            if d.name not in choices:
                raise ArchError(f"missing decision {d.name!r} for space {self.name!r}; allowed: {', '.join(d.choices)}")
            value = choices[d.name]
            if value not in d.choices:
                raise ArchError(
                    f"choice {value!r} for decision {d.name!r} is not allowed in space {self.name!r}; "
                    f"allowed: {', '.join(d.choices)}"
                )

    def sample(self, rng: random.Random) -> dict[str, str]:
        """Uniformly random choices (the `random` strategy and calibration sets use this)."""
        return {d.name: rng.choice(d.choices) for d in self.decisions}

    def stem_op(self) -> OpInstance:
        stem = StemSpec(self.build_config.stem_size, 3, self.build_config.stem_stride)
        return OpInstance(OpKind.STEM, stem.text, 3, self.resolution, self.resolution)

    def head_op(self, in_chs: int, in_h: int, in_w: int) -> OpInstance:
        return OpInstance(OpKind.HEAD, HeadSpec(self.build_config.num_features, self.num_classes).text, in_chs, in_h, in_w)

    def build_model(self, choices: Mapping[str, str], drop_rate: float = 0.0) -> nn.Module:
        """The network of validated choices, classifying `self.num_classes` classes."""
        return build_model(self.arch_def(choices), self.build_config, self.num_classes, drop_rate=drop_rate)

    def arch_ops(self, choices: Mapping[str, str]) -> list[OpInstance]:
        """The LUT ops (stem, blocks, head) of the network of validated choices: what a
        prediction sums."""
        return self.ops(self.arch_def(choices))

    def ops(self, arch_def: list[list[str]]) -> list[OpInstance]:
        """The stem, every block and the head of an arch_def, each at its input shape."""
        stem = self.stem_op()
        chs = self.build_config.stem_size
        h, w = stem.out_hw()
        ops = [stem]
        for stage in arch_def:
            for block_str in stage:
                op = OpInstance(OpKind.BLOCK, block_str, chs, h, w)
                ops.append(op)
                chs = op.out_chs()
                h, w = op.out_hw()
        ops.append(self.head_op(chs, h, w))
        return ops

    def all_ops(self) -> list[OpInstance]:
        """Every unique op the space can contain (stem, blocks, heads), deduplicated, in order."""
        heads = [self.head_op(c, h, w) for (c, h, w) in sorted(self.final_shapes())]
        return _unique([self.stem_op(), *self.candidate_blocks(), *heads])

    @abstractmethod
    def final_shapes(self) -> set[tuple[int, int, int]]:
        """(channels, height, width) that the trunk of some architecture ends with."""

    def minimal_choices(self, cost: Callable[[OpInstance], float]) -> dict[str, str] | None:
        """The choices of a network whose every op is, position by position, the one of least
        `cost` (for a cost every op has, e.g. parameters or peak activations: the smallest network
        in the sum and in the max); None where the space cannot name it exactly (a choice that
        changes the shapes of other positions)."""
        return None


def _unique(ops: Iterable[OpInstance]) -> list[OpInstance]:
    seen: dict[OpInstance, None] = {}
    for op in ops:
        seen.setdefault(op, None)
    return list(seen)


@dataclass(frozen=True)
class SearchableLayer:
    """One layer of a layer-wise space: a fixed input shape and a set of candidate blocks."""

    name: str
    stage: int
    in_chs: int
    out_chs: int
    stride: int
    in_hw: int
    candidates: tuple[str, ...]
    #: skip at a layer that changes the shape is a projection (1x1 conv, BN, ReLU at the layer's
    #: stride and width), as HW-NAS-Bench's FBNet `Skip` is; at other layers skip is the identity
    projection_skip: bool = False

    def block_string(self, candidate: str) -> str | None:
        """timm block string of a candidate (None for skip, the identity; a `cn_r1_k1` conv for a
        projection skip)."""
        if candidate == SKIP:
            return f"cn_r1_k1_s{self.stride}_c{self.out_chs}" if self.projection_skip else None
        parts = candidate.split("_")
        kernel, expand = parts[0], parts[1]
        extra = "".join(f"_{p}" for p in parts[2:])
        return f"ir_r1_{kernel}_s{self.stride}_{expand}_c{self.out_chs}{extra}"

    def op(self, candidate: str) -> OpInstance | None:
        block = self.block_string(candidate)
        if block is None:
            return None
        return OpInstance(OpKind.BLOCK, block, self.in_chs, self.in_hw, self.in_hw)


class LayerwiseSpace(SearchSpace):
    """A space with one decision per layer, each layer at a fixed shape (FBNet style).

    The differentiable supernet search needs this form: every layer's candidates take and
    give the same shapes, so they can be mixed.
    """

    #: (out_chs, num_layers, first_stride) per stage
    stages: tuple[tuple[int, int, int], ...] = ()
    #: candidate names such as "k3_e6", "k5_e1_g2", "skip"
    candidate_names: tuple[str, ...] = ()
    #: False: skip is offered only where it preserves the shape (FBNet's rule here); True: at every
    #: layer, a projection where the shape changes (HW-NAS-Bench's rule, see SearchableLayer)
    skip_everywhere: bool = False

    def __init__(self, resolution: int | None = None, num_classes: int | None = None):
        super().__init__(resolution, num_classes)
        self.layers = self._make_layers()
        self.decisions = tuple(Decision(layer.name, layer.candidates) for layer in self.layers)

    def _make_layers(self) -> tuple[SearchableLayer, ...]:
        layers = []
        chs = self.build_config.stem_size
        hw = conv_out(self.resolution, self.build_config.stem_stride)
        for stage_idx, (out_chs, count, first_stride) in enumerate(self.stages):
            for i in range(count):
                stride = first_stride if i == 0 else 1
                shape_preserving = stride == 1 and chs == out_chs
                # skip is offered only where it preserves the shape, or everywhere (skip_everywhere)
                cands = tuple(c for c in self.candidate_names if c != SKIP or shape_preserving or self.skip_everywhere)
                projection = self.skip_everywhere and not shape_preserving
                layers.append(SearchableLayer(f"layer{len(layers)}", stage_idx, chs, out_chs, stride, hw, cands,
                                              projection))
                chs, hw = out_chs, conv_out(hw, stride)
        return tuple(layers)

    def arch_ops(self, choices: Mapping[str, str]) -> list[OpInstance]:
        """As SearchSpace.arch_ops (stem, blocks, head), from each layer's op at its fixed input
        shape, built once per space: batch prediction sums thousands of architectures a second."""
        cache = self.__dict__.get("_layer_ops")
        if cache is None:
            cache = self.__dict__["_layer_ops"] = [{c: layer.op(c) for c in layer.candidates} for layer in self.layers]
            (final_shape,) = self.final_shapes()
            self.__dict__["_fixed_ops"] = (self.stem_op(), self.head_op(*final_shape))
        stem, head = self.__dict__["_fixed_ops"]
        blocks = [op for layer, ops in zip(self.layers, cache) if (op := ops[choices[layer.name]]) is not None]
        return [stem, *blocks, head]

    def arch_def(self, choices: Mapping[str, str]) -> list[list[str]]:
        stages: list[list[str]] = [[] for _ in self.stages]
        for layer in self.layers:
            block = layer.block_string(choices[layer.name])
            if block is not None:
                stages[layer.stage].append(block)
        return [s for s in stages if s]

    def minimal_choices(self, cost: Callable[[OpInstance], float]) -> dict[str, str]:
        """At each layer the candidate of least `cost` (an identity skip, no op, costs 0): exact, as
        a layer's candidates all keep the layer's input and output shapes."""
        return {layer.name: min(layer.candidates, key=lambda c: 0.0 if (op := layer.op(c)) is None else cost(op))
                for layer in self.layers}

    def candidate_blocks(self) -> list[OpInstance]:
        return _unique(op for layer in self.layers for c in layer.candidates if (op := layer.op(c)) is not None)

    def final_shapes(self) -> set[tuple[int, int, int]]:
        last = self.layers[-1]
        out = conv_out(last.in_hw, last.stride)
        return {(last.out_chs, out, out)}
