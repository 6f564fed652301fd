"""The network to export: an architecture, optionally its trained weights, in eval mode.

Built under timm's `set_layer_config(exportable=True)` so that timm picks layers that trace to
plain ONNX ops (static padding, no custom autograd activations).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from timm.layers import set_layer_config
from torch import nn

from ..core.arch import Arch
from ..core.presets import resolve_arch
from ..errors import ExportError
from ..jsonio import sha256_file
from ..core.models import arch_model, space_of
from ..preprocessing import IMAGENET, Preprocessing
from ..core.weights import check_weights_match, load_weights


@dataclass(frozen=True)
class WeightsInfo:
    """Where the exported weights came from (None in a report: randomly initialised)."""

    path: str
    sha256: str
    resolution: int
    num_classes: int

    def to_dict(self) -> dict:
        return {"path": self.path, "sha256": self.sha256, "resolution": self.resolution, "num_classes": self.num_classes}


@dataclass(frozen=True)
class ExportModel:
    """An eval-mode model and the facts an exported file needs: classes, resolution, source."""

    ref: str
    arch: Arch
    model: nn.Module
    num_classes: int
    resolution: int
    weights: WeightsInfo | None
    #: the inputs the network expects: its training data's (untrained: ImageNet statistics)
    preprocessing: Preprocessing = IMAGENET

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def prepare_model(ref: str, weights: str | None = None, resolution: int | None = None) -> ExportModel:
    """Resolve ARCH, load and check the weights (if any), build the model in eval mode.

    The resolution defaults to the weights' training resolution, else the space's default; it
    is validated by the space (a multiple of its resolution step, 32 for most, at least its minimum).
    """
    arch = resolve_arch(ref)
    payload = None
    if weights is not None:
        payload = load_weights(weights)
        check_weights_match(payload, arch)
    num_classes = int(payload["num_classes"]) if payload else None
    if resolution is None and payload:
        resolution = int(payload["resolution"])
    space = space_of(arch, resolution=resolution, num_classes=num_classes)
    with set_layer_config(exportable=True):
        model = arch_model(arch, num_classes=space.num_classes)
    info = None
    if payload:
        _load_state_dict(model, payload["state_dict"], weights, arch)
        info = WeightsInfo(str(weights), sha256_file(weights), int(payload["resolution"]), int(payload["num_classes"]))
    model.eval()
    prep = payload["preprocessing"] if payload else IMAGENET
    return ExportModel(ref, arch, model, space.num_classes, space.resolution, info, prep)


def _load_state_dict(model: nn.Module, state_dict: object, path: str, arch: Arch) -> None:
    """Strict load; any missing, unexpected or misshapen tensor is one clear error."""
    if not isinstance(state_dict, dict):
        raise ExportError(f"weights file {path} has no state dict; use the model.pt written by `hwnas train`/`hwnas search`")
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    misshapen = sorted(
        k for k in set(own) & set(state_dict)
        if not isinstance(state_dict[k], torch.Tensor) or state_dict[k].shape != own[k].shape
    )
    if missing or unexpected or misshapen:
        problems = []
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("misshapen", misshapen)):
            if keys:
                problems.append(f"{len(keys)} {what} (first: {keys[0]})")
        raise ExportError(
            f"weights file {path} does not fit architecture {arch.hash} ({arch.space}): {', '.join(problems)}; "
            "the file is damaged or was written by another model; re-save it with `hwnas train`"
        )
    model.load_state_dict(state_dict, strict=True)
