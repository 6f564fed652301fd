"""FBNet's weight-sharing supernet: per searchable layer a mixed op over the space's candidate
blocks (built by hwnas.core.build, the same builder the LUT measured), mixed by Gumbel-softmax
samples of per-layer architecture parameters.

Two forms of the mixed op (`mixed_op`):
  soft  FBNet's (the default): every candidate runs and the outputs are summed with Gumbel-softmax
        weights. Costs the sum of all candidates per layer: ~2.1 s per step of 64 images at 32px
        for `fbnet` on one CPU thread.
  hard  GDAS-style (Dong & Yang, 2019): a hard (one-hot) Gumbel-softmax sample picks one candidate
        per layer and batch; only it runs, and its output is multiplied by the straight-through
        weight (value 1, gradient of the soft sample), so the architecture parameters still get a
        gradient. ~0.3 s per step, but measured on the CIFAR-10 subset the path switching every
        batch keeps the shared weights at chance accuracy for the first 450 steps (the soft
        supernet reaches ~22% train accuracy within 100 steps), so within a CPU-minutes budget
        it gives the architecture parameters no accuracy signal. Kept as an option for long runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.build import Head, Stem, build_block
from ..errors import HwnasError
from ..core.spaces import LayerwiseSpace, SearchableLayer
from ..train.loop import init_for_training

MIXED_OPS = ("hard", "soft")


class MixedOp(nn.Module):
    """The candidates of one searchable layer, in the layer's candidate order (skip = identity)."""

    def __init__(self, layer: SearchableLayer, cfg):
        super().__init__()
        self.candidates = layer.candidates
        self.ops = nn.ModuleList(
            nn.Identity() if (block := layer.block_string(c)) is None else build_block(block, layer.in_chs, cfg)
            for c in layer.candidates
        )

    def forward(self, x: torch.Tensor, weights: torch.Tensor, index: int | None = None) -> torch.Tensor:
        if index is not None:
            return self.ops[index](x) * weights[index]
        return sum(w * op(x) for w, op in zip(weights, self.ops))


class Supernet(nn.Module):
    """Stem, one MixedOp per searchable layer, head; `alphas` are the architecture parameters
    (one logit per candidate, initialised to zero: a uniform distribution)."""

    def __init__(self, space: LayerwiseSpace, mixed_op: str = "hard"):
        super().__init__()
        if not isinstance(space, LayerwiseSpace):
            raise HwnasError(f"space {space.name!r} is not layer-wise; the fbnet strategy needs one (e.g. fbnet, tiny)")
        if mixed_op not in MIXED_OPS:
            raise HwnasError(f"mixed op {mixed_op!r} is unknown; choose one of: {', '.join(MIXED_OPS)}")
        cfg = space.build_config
        self.space_name = space.name
        self.mixed_op = mixed_op
        self.layer_names = tuple(layer.name for layer in space.layers)
        self.candidates = tuple(layer.candidates for layer in space.layers)
        self.stem = Stem(cfg)
        self.layers = nn.ModuleList(MixedOp(layer, cfg) for layer in space.layers)
        self.head = Head(space.layers[-1].out_chs, cfg, space.num_classes)
        self.alphas = nn.ParameterList(nn.Parameter(torch.zeros(len(layer.candidates))) for layer in space.layers)
        self.sampled_weights: list[torch.Tensor] = []  # the last architecture step's Gumbel-softmax weights
        init_for_training(self, self.head.classifier)

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(a) for a in self.alphas}
        return [p for p in self.parameters() if id(p) not in arch]

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.alphas)

    def probabilities(self, temperature: float = 1.0) -> list[torch.Tensor]:
        """Per-layer softmax of the architecture parameters: the learned distribution P_theta
        (sharpened toward its argmax when `temperature` < 1)."""
        return [F.softmax(a / temperature, dim=0) for a in self.alphas]

    def log_probabilities(self) -> list[list[float]]:
        return [F.log_softmax(a.detach(), dim=0).tolist() for a in self.alphas]

    def argmax_indices(self) -> list[int]:
        return [int(a.detach().argmax()) for a in self.alphas]

    def choices(self, indices) -> dict[str, str]:
        return {name: cands[i] for name, cands, i in zip(self.layer_names, self.candidates, indices)}

    def forward(self, x: torch.Tensor, temperature: float, arch_grad: bool = True) -> torch.Tensor:
        """One Gumbel-softmax sample per layer for the whole batch. `arch_grad=False` (weight steps)
        samples from the current distribution without building the graph to the alphas. With
        `arch_grad`, the sampled weights are kept in `sampled_weights`: FBNet takes the latency
        term of the same step under them."""
        x = self.stem(x)
        sampled = []
        for op, alpha in zip(self.layers, self.alphas):
            logits = alpha if arch_grad else alpha.detach()
            if self.mixed_op == "hard":
                weights = F.gumbel_softmax(logits, tau=temperature, hard=True)
                x = op(x, weights, int(weights.detach().argmax()))
            else:
                weights = F.gumbel_softmax(logits, tau=temperature, hard=False)
                x = op(x, weights)
            sampled.append(weights)
        if arch_grad:
            self.sampled_weights = sampled
        return self.head(x)

    def forward_path(self, x: torch.Tensor, indices) -> torch.Tensor:
        """The single architecture `indices` (one candidate index per layer), with shared weights."""
        x = self.stem(x)
        for op, index in zip(self.layers, indices):
            x = op.ops[index](x)
        return self.head(x)


def path_indices(space: LayerwiseSpace, arch) -> list[int]:
    """The candidate index of `arch` in each searchable layer (its single path through a supernet)."""
    return [layer.candidates.index(arch.choice_map[layer.name]) for layer in space.layers]
