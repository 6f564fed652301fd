"""A MobileNetV3 / Once-for-All style space: elastic depth, kernel and expansion, at a width."""

from __future__ import annotations

import math
from typing import Callable, Mapping

from ..build import BuildConfig, round_channels
from ..ops import OpKind
from .base import Decision, OpInstance
from .stagewise import StagewiseSpace

# (channels, first stride, activation, squeeze-excite) of MobileNetV3-Large's searchable stages
STAGES = ((24, 2, "nre", False), (40, 2, "nre", True), (80, 2, "nhs", False), (112, 1, "nhs", True), (160, 2, "nhs", True))
STEM = 16  # stem conv and the fixed first (ds k3) block
FINAL_EXPAND = 960  # the 1x1 conv before the pool
FEATURE_MIX = 1280  # the 1x1 conv after the pool (pooled head only)
DEPTHS = ("2", "3", "4")
LAYER_CHOICES = tuple(f"k{k}_e{e}" for k in (3, 5, 7) for e in (3, 4, 6))
MAX_DEPTH = 4


def scaled(channels: int, width_mult: float) -> int:
    """Channels at a width multiplier, rounded as MobileNetV3 and OFA round them (multiples of 8,
    never below 90%): 16/24/40/80/112/160/960/1280 at 1.2 are 24/32/48/96/136/192/1152/1536."""
    return round_channels(channels, width_mult)


class MobileNetV3Space(StagewiseSpace):
    """Stem conv3x3 s2 c16 h-swish and a fixed ds k3 c16 block (as MobileNetV3-Large), then 5
    stages (c24 s2, c40 s2 SE, c80 s2, c112 s1 SE, c160 s2 SE; ReLU in the first two, h-swish
    after) each with depth 2/3/4 and per layer kernel 3/5/7 and expansion 3/4/6. SE reduces
    from the expanded width with a hard-sigmoid gate, as in MobileNetV3. Head: conv1x1 c960,
    BN, h-swish, pool, classifier (timm EfficientNet's head; MobileNetV3's extra 1280-wide
    post-pool conv is left out). Layer choices beyond a stage's depth are inactive.

    Subclasses set `width_mult` (every width scaled by `scaled`) and `pooled_head` (the conv1x1
    c960 becomes a fixed last `cn` block, followed by MobileNetV3's pooled head: pool, conv1x1
    c1280 without BN or bias, h-swish, classifier)."""

    name = "mobilenetv3"
    description = "MobileNetV3/OFA: 5 stages x depth {2,3,4} x per-layer k{3,5,7} e{3,4,6}"
    width_mult = 1.0
    pooled_head = False

    def __init__(self, resolution: int | None = None, num_classes: int | None = None):
        stem = scaled(STEM, self.width_mult)
        head = FEATURE_MIX if self.pooled_head else FINAL_EXPAND
        self.build_config = BuildConfig(
            stem_size=stem, num_features=scaled(head, self.width_mult), act="hard_swish", se_gate="hard_sigmoid",
            se_from_exp=True, pooled_head=self.pooled_head,
        )
        super().__init__(resolution, num_classes)
        self.widths = tuple(scaled(chs, self.width_mult) for chs, _, _, _ in STAGES)
        self.first_block = f"ds_r1_k3_s1_e1_c{stem}_nre"
        self.final_block = f"cn_r1_k1_s1_c{scaled(FINAL_EXPAND, self.width_mult)}" if self.pooled_head else None
        self.strides = (1,) + tuple(s for _, s, _, _ in STAGES) + ((1,) if self.pooled_head else ())
        decisions = []
        for i in range(1, len(STAGES) + 1):
            decisions.append(Decision(f"s{i}.depth", DEPTHS))
            decisions += [Decision(f"s{i}.l{j}", LAYER_CHOICES) for j in range(MAX_DEPTH)]
        self.decisions = tuple(decisions)

    def _block(self, choice: str, stage: int, stride: int) -> str:
        _, _, act, se = STAGES[stage - 1]
        kernel, expand = choice.split("_")
        return f"ir_r1_{kernel}_s{stride}_{expand}_c{self.widths[stage - 1]}" + ("_se0.25" if se else "") + f"_{act}"

    def _fixed(self, stage: int) -> str | None:
        """The block of a fixed stage (the first ds block; the final expand conv), else None."""
        if stage == 0:
            return self.first_block
        return self.final_block if stage > len(STAGES) else None

    def stage_blocks(self, stage: int, choices: Mapping[str, str], in_chs: int) -> list[str]:
        fixed = self._fixed(stage)
        if fixed:
            return [fixed]
        depth = int(choices[f"s{stage}.depth"])
        return [self._block(choices[f"s{stage}.l{j}"], stage, self.strides[stage] if j == 0 else 1) for j in range(depth)]

    def stage_options(self, stage: int, in_chs: int) -> tuple[set[str], set[str]]:
        fixed = self._fixed(stage)
        if fixed:
            return {fixed}, set()
        first = {self._block(c, stage, self.strides[stage]) for c in LAYER_CHOICES}
        rest = {self._block(c, stage, 1) for c in LAYER_CHOICES}
        return first, rest

    def minimal_choices(self, cost: Callable[[OpInstance], float]) -> dict[str, str]:
        """The fewest layers per stage, and at each position the block of least `cost`: exact, as a
        stage's widths and strides are fixed, so a position's block changes no other's shape."""
        depth = min(DEPTHS, key=int)
        choices = {d.name: d.choices[0] for d in self.decisions}
        choices.update({f"s{i}.depth": depth for i in range(1, len(STAGES) + 1)})
        ops = self.arch_ops(choices)
        for i in range(1, len(STAGES) + 1):
            for j in range(int(depth)):
                at = ops[2 + (i - 1) * int(depth) + j]  # after the stem and the fixed first block
                stride = self.strides[i] if j == 0 else 1
                choices[f"s{i}.l{j}"] = min(LAYER_CHOICES, key=lambda c: cost(
                    OpInstance(OpKind.BLOCK, self._block(c, i, stride), at.in_chs, at.in_h, at.in_w)))
        return choices

    def log10_size(self) -> float:
        per_stage = sum(len(LAYER_CHOICES) ** int(d) for d in DEPTHS)
        return len(STAGES) * math.log10(per_stage)


class MobileNetV3W12Space(MobileNetV3Space):
    """Once-for-All's MobileNetV3 supernet at width 1.2, module for module: stem c24, ds c24,
    stages c32/48/96/136/192 (same depths, kernels, expansions, SE and activations as
    `mobilenetv3`), final expand conv1x1 c1152 (BN, h-swish), pool, conv1x1 c1536 (no BN, no
    bias, h-swish), classifier. Every OFA image size (128-224 px in steps of 4) is allowed; OFA
    published Note10 latency tables at 160/176/192/208/224 px (`hwnas lut import --format ofa`)."""

    name = "mobilenetv3_w12"
    description = "Once-for-All MobileNetV3 w1.2 (OFA's published Note10 tables fit it)"
    width_mult = 1.2
    pooled_head = True
    resolution_step = 4
