"""Spaces whose decisions are made per stage (MnasNet's factorized hierarchical form)."""

from __future__ import annotations

from abc import abstractmethod
from typing import Mapping

from ..ops import OpKind
from .base import OpInstance, SearchSpace, _unique, block_out_chs, conv_out


class StagewiseSpace(SearchSpace):
    """Stages with fixed strides; each stage's blocks depend on its choices and input width."""

    #: first-block stride of every stage
    strides: tuple[int, ...] = ()

    @abstractmethod
    def stage_blocks(self, stage: int, choices: Mapping[str, str], in_chs: int) -> list[str]:
        """Repeat-1 block strings of one stage, the first carrying the stage's stride."""

    @abstractmethod
    def stage_options(self, stage: int, in_chs: int) -> tuple[set[str], set[str]]:
        """Every block string the stage can hold first, and at any later position."""

    def arch_def(self, choices: Mapping[str, str]) -> list[list[str]]:
        chs = self.build_config.stem_size
        stages = []
        for i in range(len(self.strides)):
            blocks = self.stage_blocks(i, choices, chs)
            stages.append(blocks)
            chs = block_out_chs(blocks[-1])
        return stages

    def _walk(self) -> tuple[list[OpInstance], set[tuple[int, int, int]]]:
        ops: list[OpInstance] = []
        in_widths = {self.build_config.stem_size}
        hw = conv_out(self.resolution, 2)
        for i, stride in enumerate(self.strides):
            out_hw = conv_out(hw, stride)
            out_widths: set[int] = set()
            for width in sorted(in_widths):
                first, rest = self.stage_options(i, width)
                ops += [OpInstance(OpKind.BLOCK, b, width, hw, hw) for b in sorted(first)]
                ops += [OpInstance(OpKind.BLOCK, b, block_out_chs(b), out_hw, out_hw) for b in sorted(rest)]
                out_widths |= {block_out_chs(b) for b in first}
            in_widths, hw = out_widths, out_hw
        return _unique(ops), {(w, hw, hw) for w in in_widths}

    def candidate_blocks(self) -> list[OpInstance]:
        return self._walk()[0]

    def final_shapes(self) -> set[tuple[int, int, int]]:
        return self._walk()[1]
