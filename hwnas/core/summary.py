"""Static cost of a network: parameters, multiply-accumulates and activation count."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ModelSummary:
    """`activations` counts the output elements of every conv and linear layer (fvcore's rule)."""

    params: int
    macs: int
    activations: int
    resolution: int

    def to_dict(self) -> dict:
        return asdict(self)


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """MACs and activations (conv/linear output elements) of one forward pass at `input_shape`."""
    macs = 0
    activations = 0

    def conv_hook(module: nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        nonlocal macs, activations
        kh, kw = module.kernel_size
        macs += output.numel() * (module.in_channels // module.groups) * kh * kw
        activations += output.numel()

    def linear_hook(module: nn.Linear, _inputs, output: torch.Tensor) -> None:
        nonlocal macs, activations
        macs += output.numel() * module.in_features
        activations += output.numel()

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            model(torch.zeros(input_shape))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return macs, activations


def summarize(model: nn.Module, resolution: int, in_chans: int = 3) -> ModelSummary:
    """Params, and MACs and activations of one forward pass of a 1-image batch."""
    macs, activations = count_macs(model, (1, in_chans, resolution, resolution))
    params = sum(p.numel() for p in model.parameters())
    return ModelSummary(params=params, macs=macs, activations=activations, resolution=resolution)
