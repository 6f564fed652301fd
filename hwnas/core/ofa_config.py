"""A Once-for-All `net.config` (what `OFAMobileNetV3.get_active_subnet().config` writes) as an
architecture of our `mobilenetv3_w12` space, so a subnet found with OFA can be predicted,
searched around and exported here. Anything that does not fit the space is refused, naming it."""

from __future__ import annotations

import os
from typing import Mapping

from timm.layers import make_divisible

from .arch import Arch
from ..errors import ArchError, HwnasError
from ..jsonio import read_json
from .spaces import get_space
from .spaces.mobilenetv3 import DEPTHS, LAYER_CHOICES, MAX_DEPTH, STAGES, MobileNetV3W12Space

SPACE = MobileNetV3W12Space.name
_ACTS = {"nre": "relu", "nhs": "h_swish"}


class _Config:
    """Checks on one layer's config dict that raise ArchError naming the layer and the mismatch."""

    def __init__(self, layer: object, where: str):
        if not isinstance(layer, Mapping):
            raise ArchError(f"{where} is {layer!r}, not a layer config object")
        self.layer, self.where = layer, where

    def get(self, field: str):
        if field not in self.layer:
            raise ArchError(f"{self.where} lacks {field!r}")
        return self.layer[field]

    def expect(self, field: str, allowed, what: str = "") -> object:
        value = self.get(field)
        allowed = allowed if isinstance(allowed, tuple) else (allowed,)
        if value not in allowed:
            shown = " or ".join(map(repr, allowed))
            raise ArchError(f"{self.where}: {field} is {value!r}, space {SPACE!r} needs {shown}{what}")
        return value


def _conv_of(block: object, where: str) -> tuple[_Config, bool]:
    """The MBConv config of a ResidualBlock config (OFA names it `conv` or `mobile_inverted_conv`)
    and whether the block has an identity shortcut."""
    if not isinstance(block, Mapping):
        raise ArchError(f"{where} is {block!r}, not a block config object")
    conv = block.get("conv", block.get("mobile_inverted_conv"))
    if conv is None:
        raise ArchError(f"{where} has no 'mobile_inverted_conv' (or 'conv'): a skipped block does not fit {SPACE!r}")
    return _Config(conv, f"{where}.mobile_inverted_conv"), block.get("shortcut") is not None


def _expand_ratio(conv: _Config, in_chs: int) -> str:
    ratio = conv.get("expand_ratio")
    choices = sorted({c.split("_e")[1] for c in LAYER_CHOICES}, key=float)
    matches = [e for e in choices if float(e) == ratio]
    if not matches:
        raise ArchError(f"{conv.where}: expand_ratio is {ratio!r}, space {SPACE!r} needs one of {', '.join(choices)}")
    mid = conv.layer.get("mid_channels")
    if mid is not None and mid != make_divisible(round(in_chs * float(ratio)), 8):
        raise ArchError(f"{conv.where}: mid_channels {mid} is not OFA's width for expand_ratio {ratio} of "
                        f"{in_chs} channels ({make_divisible(round(in_chs * float(ratio)), 8)})")
    return matches[0]


def arch_from_ofa_config(config: object, source: str = "net.config") -> tuple[Arch, int]:
    """(architecture of `mobilenetv3_w12`, classifier classes) of an OFA MobileNetV3 net.config.

    Layers after a stage's depth are inactive in our space; they get the first choice (k3_e3)."""
    if not isinstance(config, Mapping) or "blocks" not in config:
        raise ArchError(f"{source} is not an OFA net.config (a JSON object with first_conv, blocks, "
                        "final_expand_layer, feature_mix_layer, classifier)")
    space = get_space(SPACE)
    cfg = space.build_config
    stem = _Config(config.get("first_conv"), f"{source}: first_conv")
    stem.expect("out_channels", cfg.stem_size)
    stem.expect("kernel_size", 3)
    stem.expect("stride", 2)
    stem.expect("act_func", "h_swish")
    blocks = config["blocks"]
    if not isinstance(blocks, list) or not blocks:
        raise ArchError(f"{source}: blocks must be a non-empty list")
    first, shortcut = _conv_of(blocks[0], f"{source}: blocks[0]")
    for field, value in (("in_channels", cfg.stem_size), ("out_channels", cfg.stem_size), ("kernel_size", 3),
                         ("stride", 1), ("expand_ratio", 1), ("act_func", "relu"), ("use_se", False)):
        first.expect(field, value, " (the fixed first block)")
    if not shortcut:
        raise ArchError(f"{source}: blocks[0] has no shortcut; the fixed first block of {SPACE!r} has its residual")

    choices: dict[str, str] = {}
    index, in_chs = 1, cfg.stem_size
    for stage, (width, stride, (_, _, act, se)) in enumerate(zip(space.widths, space.strides[1:], STAGES), start=1):
        depth, start = 0, index
        while index < len(blocks):
            conv, has_shortcut = _conv_of(blocks[index], f"{source}: blocks[{index}]")
            if conv.get("out_channels") != width:
                break
            if depth == MAX_DEPTH:
                raise ArchError(f"{conv.where}: stage {stage} (c{width}) has more than {MAX_DEPTH} blocks")
            conv.expect("in_channels", in_chs)
            conv.expect("stride", stride if depth == 0 else 1)
            conv.expect("act_func", _ACTS[act], f" in stage {stage}")
            conv.expect("use_se", se, f" in stage {stage}")
            kernel = conv.expect("kernel_size", (3, 5, 7))
            residual = (stride if depth == 0 else 1) == 1 and in_chs == width
            if has_shortcut != residual:
                raise ArchError(f"{conv.where}: shortcut is {'present' if has_shortcut else 'absent'}, but a block "
                                f"with stride {stride if depth == 0 else 1} and {in_chs}->{width} channels "
                                f"{'has' if residual else 'has no'} identity residual in {SPACE!r}")
            choices[f"s{stage}.l{depth}"] = f"k{kernel}_e{_expand_ratio(conv, in_chs)}"
            in_chs, depth, index = width, depth + 1, index + 1
        if str(depth) not in DEPTHS:
            raise ArchError(f"{source}: stage {stage} (c{width}) has {depth} block{'' if depth == 1 else 's'} "
                            f"from blocks[{start}] on; "
                            f"space {SPACE!r} allows depth {', '.join(DEPTHS)}")
        choices[f"s{stage}.depth"] = str(depth)
        for j in range(depth, MAX_DEPTH):
            choices[f"s{stage}.l{j}"] = LAYER_CHOICES[0]
    if index != len(blocks):
        raise ArchError(f"{source}: blocks[{index}] and after do not fit the 5 stages of {SPACE!r}")

    expand = _Config(config.get("final_expand_layer"), f"{source}: final_expand_layer")
    expand.expect("in_channels", in_chs)
    final_width = int(space.final_block.split("_c")[1])
    expand.expect("out_channels", final_width)
    expand.expect("kernel_size", 1)
    expand.expect("act_func", "h_swish")
    mix = _Config(config.get("feature_mix_layer"), f"{source}: feature_mix_layer")
    mix.expect("in_channels", final_width)
    mix.expect("out_channels", cfg.num_features)
    mix.expect("use_bn", False)
    mix.expect("act_func", "h_swish")
    classifier = _Config(config.get("classifier"), f"{source}: classifier")
    classifier.expect("in_features", cfg.num_features)
    classes = classifier.get("out_features")
    if not isinstance(classes, int) or classes < 1:
        raise ArchError(f"{source}: classifier out_features is {classes!r}, not a positive class count")
    return Arch.create(space, choices), classes


def load_ofa_config(path: str | os.PathLike) -> tuple[Arch, int]:
    try:
        data = read_json(path, "OFA net.config")
    except HwnasError as exc:
        raise ArchError(str(exc)) from None
    return arch_from_ofa_config(data, source=str(path))
