"""FBNet's macro-architecture (Wu et al., 2019): 22 searchable layers, 9 candidates each."""

from __future__ import annotations

from ..build import BuildConfig
from .base import SKIP, LayerwiseSpace


class FBNetSpace(LayerwiseSpace):
    """FBNet search space.

    Stem conv3x3 s2 c16; stages (c, n, s): (16,1,1) (24,4,2) (32,4,2) (64,4,2) (112,4,1)
    (184,4,2) (352,1,1); head conv1x1 c1984. Candidates: k3/k5 with expansion 1 (optionally
    with grouped 1x1 convs, 2 groups, and channel shuffle), 3 or 6, and skip. Skip is offered
    only at layers that preserve the shape (stride 1 and equal channels); the first layer of
    every stage after the first changes the shape, so it never skips.
    """

    name = "fbnet"
    description = "FBNet: 22 layers x {k3,k5} x {e1,e1_g2,e3,e6} + skip"
    stages = ((16, 1, 1), (24, 4, 2), (32, 4, 2), (64, 4, 2), (112, 4, 1), (184, 4, 2), (352, 1, 1))
    candidate_names = ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", SKIP)

    def __init__(self, resolution: int | None = None, num_classes: int | None = None):
        self.build_config = BuildConfig(stem_size=16, num_features=1984)
        super().__init__(resolution, num_classes)
