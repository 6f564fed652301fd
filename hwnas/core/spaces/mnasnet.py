"""MnasNet's factorized hierarchical space (Tan et al., 2019) over MobileNetV2's stages."""

from __future__ import annotations

from typing import Mapping

from timm.layers import make_divisible

from ..build import BuildConfig
from .base import Decision
from .stagewise import StagewiseSpace

# MobileNetV2 stages: (channels, layers, first stride)
MOBILENET_V2_STAGES = ((16, 1, 1), (24, 2, 2), (32, 3, 2), (64, 4, 2), (96, 3, 1), (160, 3, 2), (320, 1, 1))
# Published MnasNet widths that are not 0.75/1.0/1.25 x MobileNetV2's (A1: 112, B1: 96 is 1.0x, 192)
PUBLISHED_WIDTHS = {4: (112,), 5: (192,)}
OPS = ("mb3", "mb6", "sep")
KERNELS = ("3", "5")
SE_RATIOS = ("0", "0.25")
SKIPS = ("res", "none")


class MnasNetSpace(StagewiseSpace):
    """Per stage: op (MBConv e3 / e6, depthwise-separable), kernel 3/5, SE 0/0.25, skip
    (identity residual where shapes allow, or none), width (0.75/1.0/1.25 x MobileNetV2's,
    rounded to multiples of 8, plus the published MnasNet widths) and depth (MobileNetV2's
    -1/0/+1, at least 1). Stem conv3x3 s2 c32, head conv1x1 c1280."""

    name = "mnasnet"
    description = "MnasNet: 7 stages x op/kernel/SE/skip/width/depth"
    strides = tuple(s for _, _, s in MOBILENET_V2_STAGES)

    def __init__(self, resolution: int | None = None, num_classes: int | None = None):
        self.build_config = BuildConfig(stem_size=32, num_features=1280)
        super().__init__(resolution, num_classes)
        decisions = []
        for i, (chs, layers, _) in enumerate(MOBILENET_V2_STAGES):
            decisions += [
                Decision(f"s{i}.op", OPS),
                Decision(f"s{i}.kernel", KERNELS),
                Decision(f"s{i}.se", SE_RATIOS),
                Decision(f"s{i}.skip", SKIPS),
                Decision(f"s{i}.width", tuple(str(w) for w in self.widths(i))),
                Decision(f"s{i}.depth", tuple(str(d) for d in sorted({max(1, layers - 1), layers, layers + 1}))),
            ]
        self.decisions = tuple(decisions)

    @staticmethod
    def widths(stage: int) -> list[int]:
        chs = MOBILENET_V2_STAGES[stage][0]
        scaled = {make_divisible(chs * m) for m in (0.75, 1.0, 1.25)}
        return sorted(scaled | set(PUBLISHED_WIDTHS.get(stage, ())))

    def _block(self, op: str, kernel: str, se: str, skip: str, width: int, stride: int, residual_possible: bool) -> str:
        if op == "sep":
            block = f"ds_r1_k{kernel}_s{stride}_c{width}"
        else:
            block = f"ir_r1_k{kernel}_s{stride}_e{op[2:]}_c{width}"
        if se != "0":
            block += f"_se{se}"
        if skip == "none" and residual_possible:
            block += "_noskip"
        return block

    def stage_blocks(self, stage: int, choices: Mapping[str, str], in_chs: int) -> list[str]:
        c = {k.split(".", 1)[1]: v for k, v in choices.items() if k.startswith(f"s{stage}.")}
        width, stride = int(c["width"]), self.strides[stage]
        first = self._block(c["op"], c["kernel"], c["se"], c["skip"], width, stride, stride == 1 and in_chs == width)
        rest = self._block(c["op"], c["kernel"], c["se"], c["skip"], width, 1, True)
        return [first] + [rest] * (int(c["depth"]) - 1)

    def stage_options(self, stage: int, in_chs: int) -> tuple[set[str], set[str]]:
        stride = self.strides[stage]
        first, rest = set(), set()
        max_depth = max(int(d) for d in self.decision(f"s{stage}.depth").choices)
        for op in OPS:
            for k in KERNELS:
                for se in SE_RATIOS:
                    for skip in SKIPS:
                        for width in self.widths(stage):
                            first.add(self._block(op, k, se, skip, width, stride, stride == 1 and in_chs == width))
                            if max_depth > 1:
                                rest.add(self._block(op, k, se, skip, width, 1, True))
        return first, rest
