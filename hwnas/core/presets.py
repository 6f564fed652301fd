"""Published architectures as points of our spaces (checked against timm's parameter counts, or for
DARTS-V2 against DARTS's own code: 3,349,342 parameters at C=36, 20 cells, CIFAR-10, no auxiliary head)."""

from __future__ import annotations

from pathlib import Path

from .arch import Arch, load_arch
from .darts import Genotype
from ..errors import ArchError
from .spaces import get_space

# FBNet-C (timm `fbnetc_100`): stage by stage, the skip in the c24 stage put last
_FBNET_C = (
    ["k3_e1"]
    + ["k3_e6", "k3_e1", "k3_e1", "skip"]
    + ["k5_e6", "k5_e3", "k5_e6", "k3_e6"]
    + ["k5_e6", "k5_e3", "k5_e6", "k5_e6"]
    + ["k5_e6", "k5_e6", "k5_e6", "k5_e3"]
    + ["k5_e6"] * 4
    + ["k3_e6"]
)


def _mnasnet(stages: str) -> dict[str, str]:
    """Stages written `op kernel se skip width depth`, separated by `;`."""
    choices = {}
    for i, stage in enumerate(stages.split(";")):
        op, kernel, se, skip, width, depth = stage.split()
        choices.update({f"s{i}.op": op, f"s{i}.kernel": kernel, f"s{i}.se": se, f"s{i}.skip": skip,
                        f"s{i}.width": width, f"s{i}.depth": depth})
    return choices


# DARTS-V2 (second-order DARTS on CIFAR-10), as DARTS's cnn/genotypes.py writes it
DARTS_V2 = Genotype(
    normal=[("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 1),
            ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)], normal_concat=[2, 3, 4, 5],
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1), ("max_pool_3x3", 0),
            ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)], reduce_concat=[2, 3, 4, 5])

# (space, choices, timm model of the same network, or None where timm has none)
PRESETS: dict[str, tuple[str, dict[str, str], str | None]] = {
    "darts_v2": ("darts", DARTS_V2.to_choices(), None),
    "fbnet_c": ("fbnet", {f"layer{i}": c for i, c in enumerate(_FBNET_C)}, "fbnetc_100"),
    "mnasnet_a1": ("mnasnet", _mnasnet("sep 3 0 none 16 1; mb6 3 0 res 24 2; mb3 5 0.25 res 40 3; mb6 3 0 res 80 4; "
                                       "mb6 3 0.25 res 112 2; mb6 5 0.25 res 160 3; mb6 3 0 res 320 1"), "semnasnet_100"),
    "mnasnet_b1": ("mnasnet", _mnasnet("sep 3 0 none 16 1; mb3 3 0 res 24 3; mb3 5 0 res 40 3; mb6 5 0 res 80 3; "
                                       "mb6 3 0 res 96 2; mb6 5 0 res 192 4; mb6 3 0 none 320 1"), "mnasnet_100"),
}


def get_preset(name: str) -> Arch:
    if name not in PRESETS:
        raise ArchError(f"unknown preset {name!r}; choose one of: {', '.join(sorted(PRESETS))}")
    space_name, choices, _ = PRESETS[name]
    return Arch.create(get_space(space_name), choices)


def timm_equivalent(name: str) -> str | None:
    """Name of the timm model that the preset reproduces (None: timm has none, e.g. darts_v2)."""
    return PRESETS[name][2]


def resolve_arch(ref: str) -> Arch:
    """An architecture from a JSON file path or `preset:NAME`."""
    if ref.startswith("preset:"):
        return get_preset(ref.split(":", 1)[1])
    if not Path(ref).exists():
        raise ArchError(f"architecture {ref!r} is neither an existing JSON file nor preset:NAME (see `hwnas presets`)")
    return load_arch(ref)
