"""A tiny layer-wise space for tests: 32x32 input, 3 searchable layers, at most 16 channels."""

from __future__ import annotations

from ..build import BuildConfig
from .base import SKIP, LayerwiseSpace


class TinySpace(LayerwiseSpace):
    """Stem c8 s2; layers (8, s1), (16, s2), (16, s1); head conv1x1 c16; 10 classes."""

    name = "tiny"
    description = "test space: 3 layers x {k3_e1,k3_e1_g2,k3_e3,k5_e3} + skip, 32x32"
    default_resolution = 32
    default_num_classes = 10
    stages = ((8, 1, 1), (16, 2, 2))
    candidate_names = ("k3_e1", "k3_e1_g2", "k3_e3", "k5_e3", SKIP)

    def __init__(self, resolution: int | None = None, num_classes: int | None = None):
        self.build_config = BuildConfig(stem_size=8, num_features=16)
        super().__init__(resolution, num_classes)
