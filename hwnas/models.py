"""Architecture -> torch module, through the space's arch_def and hwnas.build."""

from __future__ import annotations

from torch import nn

from .arch import Arch
from .build import build_features, build_model
from .spaces import SearchSpace, get_space


def space_of(arch: Arch, resolution: int | None = None, num_classes: int | None = None) -> SearchSpace:
    return get_space(arch.space, resolution=resolution, num_classes=num_classes)


def arch_model(arch: Arch, num_classes: int | None = None, drop_rate: float = 0.0) -> nn.Module:
    """timm EfficientNet of an architecture (classifier with the space's default class count)."""
    space = space_of(arch, num_classes=num_classes)
    return build_model(arch.arch_def(space), space.build_config, space.num_classes, drop_rate=drop_rate)


def arch_backbone(arch: Arch, out_indices=(1, 2, 3, 4)) -> nn.Module:
    """timm EfficientNetFeatures of an architecture, for detection and segmentation heads."""
    space = space_of(arch)
    return build_features(arch.arch_def(space), space.build_config, out_indices=out_indices)
