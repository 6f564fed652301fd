"""HW-NAS-Bench's FBNet space on CIFAR-100 (Li et al., ICLR 2021), op for op: the space its
per-layer latency tables (`fbnet_lut_{raspi4,pixel3,eyeriss}_cifar100_wide.csv`) and HELP's 5,000
measured FBNet architectures were made for.

An architecture is also a list of 22 op indices into `OPS` (HW-NAS-Bench's and HELP's form,
`hwnas arch import --format op-indices`).
"""

from __future__ import annotations

import re

from ..build import BuildConfig
from ...errors import ArchError
from .base import SKIP, LayerwiseSpace

#: HW-NAS-Bench's op order: an op index is a position in this tuple
OPS = ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", SKIP)
NUM_LAYERS = 22

#: FBNet-A/B/C (Wu et al., 2019; the layer lists of facebookresearch/mobile-vision's fbnet model
#: definitions) as op indices of this space: the published ImageNet networks' ops, at CIFAR shapes
FBNET_ABC = {
    "fbnet_a": (8, 2, 0, 8, 8, 7, 2, 4, 2, 7, 6, 5, 7, 3, 5, 6, 1, 7, 7, 6, 7, 7),
    "fbnet_b": (0, 3, 4, 0, 0, 7, 6, 3, 7, 7, 7, 8, 6, 7, 0, 4, 6, 7, 4, 7, 7, 3),
    "fbnet_c": (0, 3, 8, 0, 0, 7, 6, 7, 3, 7, 6, 7, 7, 7, 7, 7, 6, 7, 7, 7, 7, 3),
}

_EXAMPLE = " ".join(map(str, FBNET_ABC["fbnet_c"]))


class FBNetCIFAR100Space(LayerwiseSpace):
    """HW-NAS-Bench's FBNet at 32x32: stem conv3x3 s1 c16 (BN, ReLU); 22 searchable layers in
    stages (c, n, s) (16,1,1) (24,4,1) (32,4,2) (64,4,2) (112,4,1) (184,4,2) (352,1,1); head
    conv1x1 c1504 (BN, ReLU), pool, FC 100. Every layer offers the 9 ops of `OPS`: MBConv k3/k5
    with expansion 1 (plain, or with both 1x1 convs grouped in 2 with a channel shuffle after
    the expansion), 3 or 6, and skip.

    Skip rule (HW-NAS-Bench's): skip is offered at every layer. Where the layer keeps the shape it
    is the identity (no op); at the six layers that change it (layer1, 5, 9, 13, 17, 21: the first
    of every stage after the first) it is HW-NAS-Bench's projection, a 1x1 conv + BN + ReLU at the
    layer's stride and width (`cn_r1_k1_s2_c32`).
    """

    name = "fbnet_cifar100"
    description = "HW-NAS-Bench FBNet on CIFAR-100: 22 layers x {k3,k5} x {e1,e1_g2,e3,e6} + skip (32x32)"
    default_resolution = 32
    default_num_classes = 100
    resolution_step = 8  # three stride-2 stages after a stride-1 stem
    stages = ((16, 1, 1), (24, 4, 1), (32, 4, 2), (64, 4, 2), (112, 4, 1), (184, 4, 2), (352, 1, 1))
    candidate_names = OPS
    skip_everywhere = True

    def __init__(self, resolution: int | None = None, num_classes: int | None = None):
        self.build_config = BuildConfig(stem_size=16, num_features=1504, stem_stride=1)
        super().__init__(resolution, num_classes)

    def choices_from_indices(self, indices) -> dict[str, str]:
        """layer -> op of 22 op indices (0..8, HW-NAS-Bench's order)."""
        indices = list(indices)
        if len(indices) != NUM_LAYERS:
            raise ArchError(f"an op-index list has {NUM_LAYERS} entries (one per layer), got {len(indices)}; "
                            f"write e.g. '{_EXAMPLE}'")
        return {layer.name: OPS[i] for layer, i in zip(self.layers, indices)}

    def indices(self, choices) -> list[int]:
        """The op-index list of a choice mapping (inverse of `choices_from_indices`)."""
        return [OPS.index(choices[layer.name]) for layer in self.layers]


def parse_op_indices(text: str) -> list[int]:
    """22 op indices from HW-NAS-Bench's / HELP's text: `8 2 0 ...` (HELP), `[8, 2, 0, ...]`
    (HW-NAS-Bench's keys) or comma-separated; ArchError naming the problem and the form otherwise."""
    text = str(text).strip()
    body = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    tokens = [t for t in re.split(r"[\s,]+", body) if t]
    bad = [t for t in tokens if not re.fullmatch(r"\d+", t) or int(t) >= len(OPS)]
    if bad:
        raise ArchError(f"op index {bad[0]!r} in {text!r} is not an integer 0..{len(OPS) - 1} "
                        f"({', '.join(f'{i} {op}' for i, op in enumerate(OPS))}); write e.g. '{_EXAMPLE}'")
    if len(tokens) != NUM_LAYERS:
        raise ArchError(f"{text!r} has {len(tokens)} op indices; HW-NAS-Bench's FBNet needs {NUM_LAYERS} (one per "
                        f"layer): write e.g. '{_EXAMPLE}'")
    return [int(t) for t in tokens]
