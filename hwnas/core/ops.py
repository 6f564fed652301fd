"""Op kinds as one typed record: what a LUT row or a space's op is (stem, block, head) and the
parsed arguments of the fixed ops, instead of string tests and `split("_")` at each use.

`OpKind` is a str enum, so `kind == "stem"` and f-strings keep working where a kind is compared or
printed. A stem spec is `c{channels}_k{kernel}_s{stride}`, a head spec `f{features}_n{classes}`;
block specs are timm block strings (hwnas.core.build.decode_block parses those), or for the cell spaces
an op of their own network: nb201's `nb201_{op}_c{channels}` (CellOpSpec), darts's
`darts_{op}_c{channels}_s{stride}` (DartsOpSpec).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum


class OpKind(str, Enum):
    STEM = "stem"
    BLOCK = "block"
    HEAD = "head"

    __hash__ = str.__hash__  # equal to its string, so it must hash like it

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @classmethod
    def parse(cls, text: str) -> "OpKind":
        """The kind named `text`; ValueError naming the kinds otherwise."""
        try:
            return cls(text)
        except ValueError:
            raise ValueError(f"op kind must be stem, block or head, not {text!r}") from None


_STEM = re.compile(r"^c(?P<channels>\d+)_k(?P<kernel>\d+)_s(?P<stride>\d+)$")
_HEAD = re.compile(r"^f(?P<features>\d+)_n(?P<classes>\d+)$")


@dataclass(frozen=True)
class StemSpec:
    """The stem conv: output channels, kernel, stride."""

    channels: int
    kernel: int = 3
    stride: int = 2

    @property
    def text(self) -> str:
        return f"c{self.channels}_k{self.kernel}_s{self.stride}"

    @classmethod
    def parse(cls, text: str) -> "StemSpec":
        match = _STEM.match(text)
        if not match:
            raise ValueError(f"stem spec {text!r} is not c<channels>_k<kernel>_s<stride>")
        return cls(int(match["channels"]), int(match["kernel"]), int(match["stride"]))


@dataclass(frozen=True)
class HeadSpec:
    """The head: its feature width (1x1 conv) and class count (classifier)."""

    features: int
    num_classes: int

    @property
    def text(self) -> str:
        return f"f{self.features}_n{self.num_classes}"

    @classmethod
    def parse(cls, text: str) -> "HeadSpec":
        match = _HEAD.match(text)
        if not match:
            raise ValueError(f"head spec {text!r} is not f<features>_n<classes>")
        return cls(int(match["features"]), int(match["classes"]))


_CELL = re.compile(r"^nb201_(?P<op>[a-z][a-z0-9_]*?)_c(?P<channels>\d+)$")
#: the NB201 network's block ops: the cell edge ops (shape-preserving) and the reduction block
CELL_OPS = ("skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3", "resblock")


@dataclass(frozen=True)
class CellOpSpec:
    """A block of NB201's network (hwnas.core.cells): a cell edge op at `channels` in and out, stride 1
    (`nb201_nor_conv_3x3_c16`), or the residual reduction block to `channels`, stride 2
    (`nb201_resblock_c32`)."""

    op: str
    channels: int

    @property
    def text(self) -> str:
        return f"nb201_{self.op}_c{self.channels}"

    @property
    def stride(self) -> int:
        return 2 if self.op == "resblock" else 1

    @staticmethod
    def matches(text: str) -> bool:
        """Whether a block spec names an NB201 op (else it is a timm block string)."""
        return text.startswith("nb201_")

    @classmethod
    def parse(cls, text: str) -> "CellOpSpec":
        match = _CELL.match(text)
        if not match or match["op"] not in CELL_OPS:
            raise ValueError(f"NB201 op spec {text!r} is not nb201_<op>_c<channels> with op one of {', '.join(CELL_OPS)}")
        return cls(match["op"], int(match["channels"]))


_DARTS = re.compile(r"^darts_(?P<op>[a-z][a-z0-9_]*?)_c(?P<channels>\d+)_s(?P<stride>\d+)$")
#: the DARTS network's block ops: the cell edge ops (`none` is never run, so never measured) and the
#: two ways a cell prepares its inputs (a 1x1 ReLUConvBN, or FactorizedReduce after a reduction cell)
DARTS_BLOCK_OPS = ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3",
                   "dil_conv_5x5", "relu_conv_bn", "factorized_reduce")


@dataclass(frozen=True)
class DartsOpSpec:
    """A block of the DARTS network (hwnas.core.darts): a cell edge op at `channels` in and out and
    `stride` (`darts_sep_conv_3x3_c36_s1`; stride 2 on a reduction cell's edges from its inputs),
    or an input preprocessing to `channels` (`darts_relu_conv_bn_c36_s1`, `darts_factorized_reduce_c72_s2`)."""

    op: str
    channels: int
    stride: int = 1

    @property
    def text(self) -> str:
        return f"darts_{self.op}_c{self.channels}_s{self.stride}"

    @staticmethod
    def matches(text: str) -> bool:
        """Whether a block spec names a DARTS op."""
        return text.startswith("darts_")

    @classmethod
    def parse(cls, text: str) -> "DartsOpSpec":
        match = _DARTS.match(text)
        if not match or match["op"] not in DARTS_BLOCK_OPS or match["stride"] not in ("1", "2"):
            raise ValueError(f"DARTS op spec {text!r} is not darts_<op>_c<channels>_s<1|2> with op one of "
                             f"{', '.join(DARTS_BLOCK_OPS)}")
        return cls(match["op"], int(match["channels"]), int(match["stride"]))


def is_cell_op(text: str) -> bool:
    """Whether a block spec names an op of a cell space's own network (nb201 or darts), not a timm block."""
    return CellOpSpec.matches(text) or DartsOpSpec.matches(text)


def parse_cell_op(text: str) -> CellOpSpec | DartsOpSpec:
    """The parsed op of a cell space's network (ValueError naming the expected form)."""
    return DartsOpSpec.parse(text) if DartsOpSpec.matches(text) else CellOpSpec.parse(text)
