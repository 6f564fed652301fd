"""Search-space registry: `get_space("fbnet", resolution=224)`."""

from __future__ import annotations

from ...errors import SpaceError
from .base import SKIP, Decision, LayerwiseSpace, OpInstance, SearchableLayer, SearchSpace
from .darts import DartsSmallSpace, DartsSpace, DartsTinySpace
from .fbnet import FBNetSpace
from .fbnet_cifar import FBNetCIFAR100Space
from .mnasnet import MnasNetSpace
from .nb201 import NB201Space
from .mobilenetv3 import MobileNetV3Space, MobileNetV3W12Space
from .proxylessnas import ProxylessNASSpace
from .tiny import TinySpace

SPACES: dict[str, type[SearchSpace]] = {
    cls.name: cls for cls in (DartsSpace, DartsSmallSpace, DartsTinySpace, FBNetSpace, FBNetCIFAR100Space, MnasNetSpace, MobileNetV3Space, MobileNetV3W12Space, NB201Space, ProxylessNASSpace, TinySpace)
}


def get_space(name: str, resolution: int | None = None, num_classes: int | None = None) -> SearchSpace:
    """Instantiate a registered space; unknown names raise SpaceError listing the known ones."""
    try:
        cls = SPACES[name]
    except KeyError:
        raise SpaceError(f"unknown search space {name!r}; choose one of: {', '.join(sorted(SPACES))}") from None
    return cls(resolution=resolution, num_classes=num_classes)


__all__ = [
    "SKIP", "SPACES", "Decision", "LayerwiseSpace", "OpInstance", "SearchableLayer", "SearchSpace", "get_space",
]
