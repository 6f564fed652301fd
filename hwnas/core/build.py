"""Turn arch_defs and single ops into modules with timm's EfficientNet builder.

This is the ONLY module of hwnas that imports timm's private `_efficientnet_builder`
(timm's minor version is pinned in requirements.txt). Everything that measures, trains or
exports a network builds it here, so the LUT, the supernet and the exported model share code.

Block strings are timm's (`ir_r1_k5_s2_e6_c32_se0.25`), plus one extension of ours: `_g2`
on an `ir` block makes both 1x1 convolutions grouped (2 groups) with a channel shuffle after
the expansion, as FBNet's `_g2` candidates are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from timm.layers import create_classifier, create_conv2d, get_act_layer, get_norm_act_layer
from timm.models._efficientnet_blocks import InvertedResidual, SqueezeExcite
from timm.models._efficientnet_builder import (
    EfficientNetBuilder,
    _decode_block_str,
    _init_weight_goog,
    round_channels,
)
from timm.models.efficientnet import EfficientNet, EfficientNetFeatures
from timm.models.mobilenetv3 import MobileNetV3

from ..errors import ArchError

_GROUP_OPTION = re.compile(r"^g(\d+)$")


@dataclass(frozen=True)
class BuildConfig:
    """How a space's networks are built: stem and head widths, default activation, SE style.

    `pooled_head`: the head pools first and then runs its 1x1 conv (`num_features` wide, no BN,
    no bias) and the classifier, as MobileNetV3 and Once-for-All do; the wide 1x1 conv before
    the pool is then the trunk's last block (`cn_r1_k1_s1_c960`). Otherwise the head is timm
    EfficientNet's: 1x1 conv, BN, activation, pool, classifier.

    `family`: "timm" for the networks built here; "nb201" for NAS-Bench-201's network
    (hwnas.core.cells), whose stem, blocks and head are NB201's own (the other fields then only
    name the stem width and the head's input width).

    `stem_stride`: the stem conv's stride (2, timm's; 1 for CIFAR-sized inputs, as HW-NAS-Bench's
    FBNet). It is not part of `name`: the stem's op spec carries it, and blocks are built alike.
    """

    stem_size: int
    num_features: int
    act: str = "relu"
    se_gate: str = "sigmoid"
    se_from_exp: bool = False
    pooled_head: bool = False
    family: str = "timm"
    stem_stride: int = 2

    @property
    def name(self) -> str:
        """Short identifier that goes into LUT op keys (ops built differently never share a row)."""
        if self.family != "timm":
            return self.family
        se = "sexp" if self.se_from_exp else "sin"
        return f"{self.act}-{self.se_gate}-{se}" + ("-pooledhead" if self.pooled_head else "")


class ChannelShuffle(nn.Module):
    """Channel shuffle written with view/transpose so that it exports to plain ONNX ops."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x = x.reshape(b, self.groups, c // self.groups, h, w).transpose(1, 2)
        return x.reshape(b, c, h, w)


class GroupedInvertedResidual(nn.Module):
    """timm's InvertedResidual with grouped 1x1 convolutions and a channel shuffle (FBNet `_g2`)."""

    def __init__(self, block: InvertedResidual, groups: int):
        super().__init__()
        pw, pwl = block.conv_pw, block.conv_pwl
        for conv in (pw, pwl):
            if conv.in_channels % groups or conv.out_channels % groups:
                raise ArchError(
                    f"grouped 1x1 conv needs channels divisible by {groups}, got "
                    f"{conv.in_channels}->{conv.out_channels}; use widths that are multiples of {groups}"
                )
        self.has_skip = block.has_skip
        self.conv_pw = nn.Conv2d(pw.in_channels, pw.out_channels, 1, groups=groups, bias=False)
        self.bn1 = block.bn1
        self.shuffle = ChannelShuffle(groups)
        self.conv_dw = block.conv_dw
        self.bn2 = block.bn2
        self.aa = block.aa
        self.se = block.se
        self.conv_pwl = nn.Conv2d(pwl.in_channels, pwl.out_channels, 1, groups=groups, bias=False)
        self.bn3 = block.bn3
        self.drop_path = block.drop_path

    def feature_info(self, location: str) -> dict:
        if location == "expansion":
            return dict(module="conv_pwl", hook_type="forward_pre", num_chs=self.conv_pwl.in_channels)
        return dict(module="", num_chs=self.conv_pwl.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.shuffle(self.bn1(self.conv_pw(x)))
        x = self.se(self.aa(self.bn2(self.conv_dw(x))))
        x = self.bn3(self.conv_pwl(x))
        if self.has_skip:
            x = self.drop_path(x) + shortcut
        return x


class HwnasBuilder(EfficientNetBuilder):
    """timm's builder, plus the `pw_groups` block argument that our `_g2` option sets."""

    def _make_block(self, ba, block_idx, block_count):
        groups = ba.pop("pw_groups", 1)
        block = super()._make_block(ba, block_idx, block_count)
        if groups > 1:
            if not isinstance(block, InvertedResidual):
                raise ArchError("the _g option applies to 'ir' blocks only")
            block = GroupedInvertedResidual(block, groups)
            block.apply(_init_weight_goog)
        return block


def decode_block(block_str: str) -> dict:
    """Decode one block string (repeat 1) into timm block args, with our `_gN` extension."""
    try:
        args, repeats = _decode_block_str(block_str)
    except (AssertionError, KeyError, ValueError, IndexError) as exc:
        raise ArchError(f"malformed block string {block_str!r} ({exc!r}); expected e.g. ir_r1_k3_s1_e6_c32") from exc
    for part in block_str.split("_")[1:]:
        match = _GROUP_OPTION.match(part)
        if match and int(match.group(1)) > 1:
            args["pw_groups"] = int(match.group(1))
    return args, repeats


def decode_arch_def(arch_def: list[list[str]]) -> list[list[dict]]:
    """timm's decode_arch_def (depth multiplier 1) that also understands `_gN`."""
    stages = []
    for stage in arch_def:
        blocks = []
        for block_str in stage:
            args, repeats = decode_block(block_str)
            blocks.extend(dict(args) for _ in range(repeats))
        stages.append(blocks)
    return stages


def _se_layer(cfg: BuildConfig):
    if cfg.se_gate == "sigmoid":
        return SqueezeExcite
    return partial(SqueezeExcite, gate_layer=cfg.se_gate, force_act_layer=nn.ReLU, rd_round_fn=round_channels)


def _builder(cfg: BuildConfig, feature_location: str = "") -> HwnasBuilder:
    return HwnasBuilder(
        act_layer=get_act_layer(cfg.act),
        norm_layer=nn.BatchNorm2d,
        se_layer=_se_layer(cfg),
        se_from_exp=cfg.se_from_exp,
        feature_location=feature_location,
    )


def _model_kwargs(cfg: BuildConfig) -> dict:
    return dict(
        stem_size=cfg.stem_size,
        act_layer=get_act_layer(cfg.act),
        norm_layer=nn.BatchNorm2d,
        se_layer=_se_layer(cfg),
        round_chs_fn=round_channels,
    )


def _set_stem_stride(model: nn.Module, cfg: BuildConfig) -> None:
    """timm's stem conv is stride 2; a space with another stem stride gets its own conv (3x3,
    padding 1 either way)."""
    if cfg.stem_stride != 2:
        conv = model.conv_stem
        model.conv_stem = create_conv2d(conv.in_channels, conv.out_channels, 3, stride=cfg.stem_stride)
        _init_weight_goog(model.conv_stem)


def _rebuild_trunk(model: nn.Module, arch_def: list[list[str]], cfg: BuildConfig, feature_location: str = ""):
    """Replace the trunk that timm's model made with the one our builder makes (same shapes)."""
    builder = _builder(cfg, feature_location)
    model.blocks = nn.Sequential(*builder(cfg.stem_size, decode_arch_def(arch_def)))
    model.blocks.apply(_init_weight_goog)
    return builder


def _plain_args(arch_def: list[list[str]]) -> list[list[dict]]:
    stages = decode_arch_def(arch_def)
    for stage in stages:
        for args in stage:
            args.pop("pw_groups", None)
    return stages


def build_model(arch_def: list[list[str]], cfg: BuildConfig, num_classes: int = 1000, drop_rate: float = 0.0) -> nn.Module:
    """Build a timm EfficientNet (MobileNetV3 for a pooled head) for an arch_def (the trunk made
    by HwnasBuilder)."""
    if not arch_def or not all(arch_def):
        raise ArchError("an arch_def needs at least one stage and no empty stage")
    model_class, head_kwargs = (MobileNetV3, dict(head_bias=False)) if cfg.pooled_head else (EfficientNet, {})
    model = model_class(
        block_args=_plain_args(arch_def),
        num_classes=num_classes,
        num_features=cfg.num_features,
        drop_rate=drop_rate,
        **head_kwargs,
        **_model_kwargs(cfg),
    )
    _set_stem_stride(model, cfg)
    _rebuild_trunk(model, arch_def, cfg)
    return model


def build_features(arch_def: list[list[str]], cfg: BuildConfig, out_indices=(1, 2, 3, 4)) -> EfficientNetFeatures:
    """Build a timm EfficientNetFeatures backbone (multi-scale outputs) for detection/segmentation."""
    model = EfficientNetFeatures(block_args=_plain_args(arch_def), out_indices=tuple(out_indices), **_model_kwargs(cfg))
    _set_stem_stride(model, cfg)
    _rebuild_trunk(model, arch_def, cfg, feature_location="bottleneck")
    return model


def build_block(block_str: str, in_chs: int, cfg: BuildConfig) -> nn.Module:
    """Build one block exactly as the full-model builder makes it, for input channels `in_chs`."""
    builder = _builder(cfg)
    args, _ = decode_block(block_str)
    (stage,) = builder(in_chs, [[args]])
    return stage[0]


class Stem(nn.Sequential):
    """conv_stem + bn1 of timm's EfficientNet, as a standalone module."""

    def __init__(self, cfg: BuildConfig, in_chans: int = 3):
        norm_act = get_norm_act_layer(nn.BatchNorm2d, get_act_layer(cfg.act))
        super().__init__(
            create_conv2d(in_chans, round_channels(cfg.stem_size), 3, stride=cfg.stem_stride),
            norm_act(round_channels(cfg.stem_size), inplace=True),
        )


class Head(nn.Module):
    """The head of the full model as a standalone module: conv_head + bn2 + global pool +
    classifier of timm's EfficientNet, or for a pooled head (MobileNetV3's) global pool +
    conv_head + activation + classifier."""

    def __init__(self, in_chs: int, cfg: BuildConfig, num_classes: int):
        super().__init__()
        self.pooled = cfg.pooled_head
        if self.pooled:
            self.global_pool = nn.AdaptiveAvgPool2d(1)
            self.conv_head = create_conv2d(in_chs, cfg.num_features, 1, bias=False)
            self.act = get_act_layer(cfg.act)(inplace=True)
            self.classifier = nn.Linear(cfg.num_features, num_classes)
            return
        norm_act = get_norm_act_layer(nn.BatchNorm2d, get_act_layer(cfg.act))
        self.conv_head = create_conv2d(in_chs, cfg.num_features, 1)
        self.bn2 = norm_act(cfg.num_features, inplace=True)
        self.global_pool, self.classifier = create_classifier(cfg.num_features, num_classes, pool_type="avg")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pooled:
            return self.classifier(torch.flatten(self.act(self.conv_head(self.global_pool(x))), 1))
        return self.classifier(self.global_pool(self.bn2(self.conv_head(x))))


def feature_levels(arch_def: list[list[str]], cfg: BuildConfig) -> list[tuple[int, int]]:
    """(channels, reduction) of every map `build_features` can return, in order (its `out_indices`
    index into this list), so a caller picks levels by stride before building the backbone."""
    probe = EfficientNetFeatures(block_args=_plain_args(arch_def), out_indices=(0,), **_model_kwargs(cfg))
    return [(int(f["num_chs"]), int(f["reduction"])) for f in probe.feature_info.info]
