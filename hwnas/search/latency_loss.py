"""The latency-aware losses of the architecture step; `lat` is the expected latency (ms) of the
predictor, differentiable in the architecture parameters.

  fbnet         CE * alpha * log(1 + LAT)^beta   (FBNet, Wu et al. 2019, with alpha 0.2, beta 0.6;
                log(1 + LAT) rather than log LAT keeps the factor positive for sub-millisecond
                tables such as the tiny test space's; for LATs of several ms the two are within a
                few percent)
  budget        CE + weight * (max(0, LAT / budget - 1) + under * max(0, 1 - LAT / budget))
                a hinge on the relative overshoot pushes the expected latency under the budget;
                `under` (0..1) adds a weaker pull up toward the budget from below (TuNAS's absolute
                reward when 1), so that a search does not settle far below its budget: under
                pressure early on, the distribution's argmax drifts to the fastest candidates,
                and without it nothing pulls it back
  fbnet+budget  both: FBNet's multiplicative trade-off plus the hinge
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import HwnasError

LATENCY_LOSSES = ("fbnet", "budget", "fbnet+budget")


def fbnet_factor(lat_ms: torch.Tensor, alpha: float = 0.2, beta: float = 0.6) -> torch.Tensor:
    return alpha * torch.log1p(lat_ms) ** beta


def budget_penalty(lat_ms: torch.Tensor, budget_ms: float, weight: float = 1.0, under: float = 0.0) -> torch.Tensor:
    ratio = lat_ms / budget_ms
    return weight * (F.relu(ratio - 1.0) + under * F.relu(1.0 - ratio))


def latency_aware_loss(ce: torch.Tensor, lat_ms: torch.Tensor, kind: str, budget_ms: float | None,
                       alpha: float = 0.2, beta: float = 0.6, weight: float = 1.0, under: float = 0.0) -> torch.Tensor:
    if kind not in LATENCY_LOSSES:
        raise HwnasError(f"latency loss {kind!r} is unknown; choose one of: {', '.join(LATENCY_LOSSES)}")
    if "budget" in kind and budget_ms is None:
        raise HwnasError(f"latency loss {kind!r} needs --latency-budget")
    loss = ce * fbnet_factor(lat_ms, alpha, beta) if kind.startswith("fbnet") else ce
    if "budget" in kind:
        loss = loss + budget_penalty(lat_ms, budget_ms, weight, under)
    return loss
