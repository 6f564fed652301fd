"""A MobileNetV3 / Once-for-All style space: elastic depth, kernel and expansion."""

from __future__ import annotations

import math
from typing import Mapping

from ..build import BuildConfig
from .base import Decision
from .stagewise import StagewiseSpace

# (channels, first stride, activation, squeeze-excite) of MobileNetV3-Large's searchable stages
STAGES = ((24, 2, "nre", False), (40, 2, "nre", True), (80, 2, "nhs", False), (112, 1, "nhs", True), (160, 2, "nhs", True))
FIRST_BLOCK = "ds_r1_k3_s1_e1_c16_nre"
DEPTHS = ("2", "3", "4")
LAYER_CHOICES = tuple(f"k{k}_e{e}" for k in (3, 5, 7) for e in (3, 4, 6))
MAX_DEPTH = 4


class MobileNetV3Space(StagewiseSpace):
    """Stem conv3x3 s2 c16 h-swish and a fixed ds k3 c16 block (as MobileNetV3-Large), then 5
    stages (c24 s2, c40 s2 SE, c80 s2, c112 s1 SE, c160 s2 SE; ReLU in the first two, h-swish
    after) each with depth 2/3/4 and per layer kernel 3/5/7 and expansion 3/4/6. SE reduces
    from the expanded width with a hard-sigmoid gate, as in MobileNetV3. Head: conv1x1 c960,
    BN, h-swish, pool, classifier (timm EfficientNet's head; MobileNetV3's extra 1280-wide
    post-pool conv is left out). Layer choices beyond a stage's depth are inactive."""

    name = "mobilenetv3"
    description = "MobileNetV3/OFA: 5 stages x depth {2,3,4} x per-layer k{3,5,7} e{3,4,6}"
    strides = (1,) + tuple(s for _, s, _, _ in STAGES)

    def __init__(self, resolution: int | None = None, num_classes: int | None = None):
        self.build_config = BuildConfig(
            stem_size=16, num_features=960, act="hard_swish", se_gate="hard_sigmoid", se_from_exp=True
        )
        super().__init__(resolution, num_classes)
        decisions = []
        for i in range(1, len(STAGES) + 1):
            decisions.append(Decision(f"s{i}.depth", DEPTHS))
            decisions += [Decision(f"s{i}.l{j}", LAYER_CHOICES) for j in range(MAX_DEPTH)]
        self.decisions = tuple(decisions)

    @staticmethod
    def _block(choice: str, stage: int, stride: int) -> str:
        chs, _, act, se = STAGES[stage - 1]
        kernel, expand = choice.split("_")
        return f"ir_r1_{kernel}_s{stride}_{expand}_c{chs}" + ("_se0.25" if se else "") + f"_{act}"

    def stage_blocks(self, stage: int, choices: Mapping[str, str], in_chs: int) -> list[str]:
        if stage == 0:
            return [FIRST_BLOCK]
        depth = int(choices[f"s{stage}.depth"])
        return [self._block(choices[f"s{stage}.l{j}"], stage, self.strides[stage] if j == 0 else 1) for j in range(depth)]

    def stage_options(self, stage: int, in_chs: int) -> tuple[set[str], set[str]]:
        if stage == 0:
            return {FIRST_BLOCK}, set()
        first = {self._block(c, stage, self.strides[stage]) for c in LAYER_CHOICES}
        rest = {self._block(c, stage, 1) for c in LAYER_CHOICES}
        return first, rest

    def log10_size(self) -> float:
        per_stage = sum(len(LAYER_CHOICES) ** int(d) for d in DEPTHS)
        return len(STAGES) * math.log10(per_stage)
