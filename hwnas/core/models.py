"""Architecture -> torch module, through the space (a timm arch_def built by hwnas.core.build, or a
cell space's own network)."""

from __future__ import annotations

from torch import nn

from .arch import Arch
from .build import build_features
from .spaces import SearchSpace, get_space


def space_of(arch: Arch, resolution: int | None = None, num_classes: int | None = None) -> SearchSpace:
    return get_space(arch.space, resolution=resolution, num_classes=num_classes)


def arch_model(arch: Arch, num_classes: int | None = None, drop_rate: float = 0.0) -> nn.Module:
    """The network of an architecture (a timm EfficientNet, or NB201's network for nb201), with the
    space's default class count unless `num_classes` is given."""
    space = space_of(arch, num_classes=num_classes)
    arch.check_space(space)
    return space.build_model(arch.choice_map, drop_rate=drop_rate)


def arch_backbone(arch: Arch, out_indices=(1, 2, 3, 4)) -> nn.Module:
    """timm EfficientNetFeatures of an architecture, for detection and segmentation heads."""
    space = space_of(arch)
    return build_features(arch.arch_def(space), space.build_config, out_indices=out_indices)
