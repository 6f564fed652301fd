"""Multi-scale backbones in torchvision's contract: `out_channels` and an `OrderedDict[str, Tensor]`.

A searched architecture becomes timm's `EfficientNetFeatures` through `hwnas.core.build` (the code
path that builds the LUT's blocks); torchvision's `mobilenet_v3_large` (randomly initialised)
is the reference backbone the benchmark compares against. Both are `FeatureBackbone`s: a body
returning a list of maps plus the channels and stride of each, so every head is built the same
way on either. `with_fpn` adds torchvision's `FeaturePyramidNetwork` where a head needs equal
channels.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import torch
from timm.layers import set_layer_config
from torch import nn
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from ..core.arch import Arch
from ..core.build import build_features, feature_levels
from ..errors import ArchError
from ..core.models import space_of
from ..core.weights import check_weights_match, load_weights


@dataclass(frozen=True)
class Level:
    """One map a backbone can return: its index in the body's output, channels and stride."""

    index: int
    channels: int
    reduction: int


class FeatureBackbone(nn.Module):
    """A body that returns a list of maps, exposed as an OrderedDict of the chosen `names`.

    `out_channels` is the channel list of the returned maps (a head that needs one number
    goes through `with_fpn`); `levels` says what each name is.
    """

    def __init__(self, body: nn.Module, levels: Sequence[Level], names: Sequence[str]):
        super().__init__()
        if len(levels) != len(names) or not levels:
            raise ValueError(f"need one name per level, got {len(levels)} levels and names {list(names)}")
        self.body = body
        self.levels = tuple(levels)
        self.names = tuple(names)
        self.out_channels = [lv.channels for lv in levels]

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        maps = self.body(x)
        return OrderedDict((name, maps[lv.index]) for name, lv in zip(self.names, self.levels))


class FPNBackbone(nn.Module):
    """A FeatureBackbone followed by torchvision's FPN (plus a max-pooled level named `pool`)."""

    def __init__(self, backbone: FeatureBackbone, out_channels: int):
        super().__init__()
        self.body = backbone
        self.fpn = FeaturePyramidNetwork(backbone.out_channels, out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels
        self.names = tuple(backbone.names) + ("pool",)
        self.reductions = tuple(lv.reduction for lv in backbone.levels) + (2 * backbone.levels[-1].reduction,)

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        return self.fpn(self.body(x))


def with_fpn(backbone: FeatureBackbone, out_channels: int) -> FPNBackbone:
    return FPNBackbone(backbone, out_channels)


@dataclass(frozen=True)
class BackboneSource:
    """Builds the full-depth body of one backbone and lists the maps it returns."""

    name: str
    levels: tuple[Level, ...]
    arch: Arch | None = None
    weights: str | None = None
    resolution: int | None = None

    def build(self, picks: Sequence[int], names: Sequence[str]) -> FeatureBackbone:
        """A FeatureBackbone returning the levels at positions `picks` of `self.levels` as `names`."""
        chosen = [self.levels[i] for i in picks]
        if self.arch is not None:
            body = _arch_body(self.arch, self.resolution, self.weights)
        else:
            body = _MobileNetV3Body()
        return FeatureBackbone(body, chosen, names)


class _ArchBody(nn.Module):
    """timm EfficientNetFeatures returning every level (a list), built by hwnas.core.build."""

    def __init__(self, features: nn.Module):
        super().__init__()
        self.features = features

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.features(x)


def _arch_body(arch: Arch, resolution: int | None, weights: str | None) -> _ArchBody:
    space = space_of(arch, resolution=resolution)
    arch_def = arch.arch_def(space)
    count = len(feature_levels(arch_def, space.build_config))
    with set_layer_config(exportable=True):
        features = build_features(arch_def, space.build_config, out_indices=tuple(range(count)))
    if weights is not None:
        load_backbone_weights(features, arch, weights)
    return _ArchBody(features)


def load_backbone_weights(features: nn.Module, arch: Arch, path: str) -> None:
    """Initialise stem and blocks from a `model.pt` of `hwnas train` (the classifier is dropped)."""
    payload = load_weights(path)
    check_weights_match(payload, arch)
    own = features.state_dict()
    state = {k: v for k, v in payload["state_dict"].items() if k in own}
    missing = sorted(set(own) - set(state))
    bad = sorted(k for k in state if state[k].shape != own[k].shape)
    if missing or bad:
        first = (missing or bad)[0]
        raise ArchError(f"weights {path} do not fit the backbone of {arch.hash}: {len(missing)} missing, "
                        f"{len(bad)} misshapen (first: {first}); use the model.pt this architecture was trained to")
    features.load_state_dict(state, strict=True)


def arch_source(arch: Arch, resolution: int | None = None, weights: str | None = None) -> BackboneSource:
    """The backbone of a searched (or preset) architecture."""
    space = space_of(arch, resolution=resolution)
    levels = feature_levels(arch.arch_def(space), space.build_config)
    return BackboneSource(f"arch:{arch.hash}", tuple(Level(i, c, r) for i, (c, r) in enumerate(levels)),
                          arch=arch, weights=weights, resolution=space.resolution)


class _MobileNetV3Body(nn.Module):
    """torchvision mobilenet_v3_large (weights=None) features, returning the end of every stride.

    Plain `nn.BatchNorm2d` (momentum 0.1, as timm's blocks have and as torchvision's
    `fasterrcnn_mobilenet_v3_large_fpn` uses for an untrained backbone): the classifier's default
    momentum of 0.01 leaves the running statistics near their initial values after a short
    schedule, and the eval-mode network then sees features it was never trained on."""

    def __init__(self):
        super().__init__()
        from torchvision.models import mobilenet_v3_large

        self.features = mobilenet_v3_large(weights=None, norm_layer=nn.BatchNorm2d).features
        self.taps = _mobilenet_taps(self.features)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, block in enumerate(self.features):
            x = block(x)
            if i in self.taps:
                out.append(x)
        return out


def _mobilenet_taps(features: nn.Sequential) -> tuple[int, ...]:
    """Indices of the last block before each stride change, and the last block (C1..C5)."""
    strided = [i for i, b in enumerate(features) if getattr(b, "_is_cn", False)]
    return tuple(i - 1 for i in strided) + (len(features) - 1,)


def mobilenet_v3_source() -> BackboneSource:
    """torchvision's mobilenet_v3_large, randomly initialised (the benchmark's reference)."""
    body = _MobileNetV3Body()
    with torch.no_grad():
        maps = body.eval()(torch.zeros(1, 3, 64, 64))
    levels = tuple(Level(i, int(m.shape[1]), 64 // int(m.shape[-1])) for i, m in enumerate(maps))
    return BackboneSource("torchvision:mobilenet_v3_large", levels)
