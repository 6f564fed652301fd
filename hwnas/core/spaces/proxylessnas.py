"""ProxylessNAS's mobile space (Cai et al., 2019), op for op: the space its published mobile
latency table (`mobile_trim.yaml`) was measured for."""

from __future__ import annotations

from typing import Mapping

from ..build import BuildConfig
from .base import SKIP, Decision
from .stagewise import StagewiseSpace

# (channels, layers, first stride) of the searchable stages
STAGES = ((24, 4, 2), (40, 4, 2), (80, 4, 2), (96, 4, 1), (192, 4, 2), (320, 1, 1))
FIRST_BLOCK = "ds_r1_k3_s1_c16"
CANDIDATES = tuple(f"k{k}_e{e}" for k in (3, 5, 7) for e in (3, 6))


class ProxylessNASSpace(StagewiseSpace):
    """Stem conv3x3 s2 c32, a fixed MBConv1 k3 c16 block (dw + linear pw), then 6 stages
    (c24 s2, c40 s2, c80 s2, c96 s1, c192 s2: 4 layers each; c320 s1: 1 layer). Every layer
    picks an MBConv k3/5/7 e3/6; a layer after a stage's first may be `skip` (ProxylessNAS's
    zero op: its residual block becomes the identity). ReLU6 throughout, no SE. Head: conv1x1
    c1280, BN, ReLU6, pool, classifier (ProxylessNAS's feature mix layer)."""

    name = "proxylessnas"
    description = "ProxylessNAS mobile: 21 layers x MBConv k{3,5,7} e{3,6} (+skip after a stage's first)"
    strides = (1,) + tuple(s for _, _, s in STAGES)

    def __init__(self, resolution: int | None = None, num_classes: int | None = None):
        self.build_config = BuildConfig(stem_size=32, num_features=1280, act="relu6")
        super().__init__(resolution, num_classes)
        decisions = []
        for i, (_, layers, _) in enumerate(STAGES, start=1):
            decisions.append(Decision(f"s{i}.l0", CANDIDATES))
            decisions += [Decision(f"s{i}.l{j}", CANDIDATES + (SKIP,)) for j in range(1, layers)]
        self.decisions = tuple(decisions)

    @staticmethod
    def _block(choice: str, stage: int, stride: int) -> str:
        kernel, expand = choice.split("_")
        return f"ir_r1_{kernel}_s{stride}_{expand}_c{STAGES[stage - 1][0]}"

    def stage_blocks(self, stage: int, choices: Mapping[str, str], in_chs: int) -> list[str]:
        if stage == 0:
            return [FIRST_BLOCK]
        layers = [choices[f"s{stage}.l{j}"] for j in range(STAGES[stage - 1][1])]
        return [self._block(c, stage, self.strides[stage] if j == 0 else 1) for j, c in enumerate(layers) if c != SKIP]

    def stage_options(self, stage: int, in_chs: int) -> tuple[set[str], set[str]]:
        if stage == 0:
            return {FIRST_BLOCK}, set()
        first = {self._block(c, stage, self.strides[stage]) for c in CANDIDATES}
        rest = {self._block(c, stage, 1) for c in CANDIDATES} if STAGES[stage - 1][1] > 1 else set()
        return first, rest
