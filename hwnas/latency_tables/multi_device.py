"""Several devices' latency as one latency model, for a search under a budget on each.

A search over several devices must keep every budgeted device within its budget. The rule that
lets every strategy do so unchanged: measure latency in units of the budgets. The model's
`latency_ms(arch)` is

    B_1 * max over budgeted devices d of  L_d(arch) / B_d

(B_1 the first budgeted device's budget): it is at most B_1 exactly when every device is within
its budget, it is device 1's own latency whenever device 1 is the one that binds, and a strategy
that keeps it under B_1 (rejection, penalty, a repair, a differentiable penalty on the expected
latency) keeps every device under its own. Per layer, each device's costs are scaled by
B_1 / B_d (`in_budget_units`; hwnas.search.decision_costs), so a repair sees which device is over
and by how much.

Devices given without a budget are reported, never constrained. Memory and parameters are the
first device's (the same network everywhere; a published table counts them from the ops).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch

from ..core.arch import Arch
from ..errors import LutError
from .predictor import LatencyPredictor, Prediction


@dataclass(frozen=True)
class Device:
    """One device of a search: its name (as given to `--lut NAME=TABLE`), its latency model, its
    budget in ms (None: reported only) and where its table came from."""

    name: str
    predictor: LatencyPredictor
    budget_ms: float | None
    source: str = ""


class MultiDevicePredictor:
    """The latency model of a search under budgets on several devices (see the module's rule)."""

    range_is_exact = True  # latency_range is not asked of it: each device's budget is resolved on its own table
    task_head_offset_ms = 0.0

    def __init__(self, devices: Sequence[Device]):
        if len(devices) < 2:
            raise LutError("a multi-device latency model needs two or more devices")
        names = [d.name for d in devices]
        if len(set(names)) != len(names):
            raise LutError(f"device names must differ, got {', '.join(names)}")
        spaces = {(d.predictor.space.name, d.predictor.space.resolution) for d in devices}
        if len(spaces) > 1:
            raise LutError(f"every device's table must predict the same space and resolution, got {sorted(spaces)}")
        self.devices = tuple(devices)
        self.budgeted = tuple(d for d in devices if d.budget_ms is not None)
        self.primary = self.budgeted[0] if self.budgeted else self.devices[0]
        self.space = self.primary.predictor.space
        self.table = self.primary.predictor.table
        derived = [f"{d.name}: {d.predictor.derived}" for d in devices if d.predictor.derived]
        self.derived = "; ".join(derived) or None
        self._scales = [self.primary.budget_ms / d.budget_ms for d in self.budgeted] if self.budgeted else [1.0]
        self._constrained = [d.predictor for d in self.budgeted] or [self.primary.predictor]

    @property
    def budget_ms(self) -> float | None:
        """The budget in this model's units: the first budgeted device's (None if none is budgeted)."""
        return self.primary.budget_ms

    @property
    def source(self) -> str:
        return ", ".join(f"{d.name}={d.source}" for d in self.devices)

    def with_budget(self, name: str, budget_ms: float) -> "MultiDevicePredictor":
        """The same devices with `name`'s budget replaced (the on-device check tightens one)."""
        if name not in {d.name for d in self.devices}:
            raise LutError(f"no device {name!r} in this search")
        return MultiDevicePredictor([replace(d, budget_ms=budget_ms) if d.name == name else d for d in self.devices])

    # --- what a search asks of a latency model -------------------------------------------
    def device_latencies_ms(self, arch: Arch) -> dict[str, float]:
        """Each device's own predicted latency (ms) of `arch`."""
        return {d.name: d.predictor.latency_ms(arch) for d in self.devices}

    def latency_ms(self, arch: Arch) -> float:
        """B_1 * the largest latency / budget of the budgeted devices (module docstring)."""
        return max(s * p.latency_ms(arch) for s, p in zip(self._scales, self._constrained))

    def predict(self, arch: Arch) -> Prediction:
        """The first device's prediction (its memory, parameters), with this model's latency; the
        stated error is the binding device's."""
        ratios = [s * p.latency_ms(arch) for s, p in zip(self._scales, self._constrained)]
        binding = int(np.argmax(ratios))
        base = self.primary.predictor.predict(arch)
        error = self._constrained[binding].predict(arch).error_pct
        return replace(base, latency_ms=ratios[binding], error_pct=error, derived=self.derived)

    def batch_latency_ms(self, archs: Sequence[Arch]) -> np.ndarray:
        return np.array([self.latency_ms(a) for a in archs], dtype=np.float64)

    def expected_latency(self, probabilities: Sequence[torch.Tensor]) -> torch.Tensor:
        """Differentiable form for supernet search: the largest of the budgeted devices' expected
        latencies, each scaled to the first budget's units (its gradient is the binding device's)."""
        return torch.stack([s * p.expected_latency(probabilities)
                            for s, p in zip(self._scales, self._constrained)]).max()

    def in_budget_units(self) -> list[tuple[float, LatencyPredictor]]:
        """(scale, predictor) per budgeted device: its latency times scale is in the first budget's
        units, so every budget is the same number there (the first device alone if none is budgeted)."""
        return list(zip(self._scales, self._constrained))

    def layer_costs(self) -> tuple[float, list[torch.Tensor]]:
        """Not additive over several devices (a max is not a sum): see hwnas.search.decision_costs."""
        raise LutError("a multi-device latency is the largest of several devices' latencies, not a sum of layer "
                       "costs; use hwnas.search.decision_costs.decision_costs(model).per_device")

    def fastest_latency_ms(self) -> float:
        """A lower bound of the fastest architecture's latency: the largest of the devices' own minima."""
        return max(s * p.fastest_latency_ms() for s, p in self.in_budget_units())

    def smallest_memory(self):
        return self.primary.predictor.smallest_memory()

    def fingerprint(self) -> str:
        """Each device's table fingerprint with its budget: part of a run's identity."""
        doc = [[d.name, d.predictor.fingerprint(), d.budget_ms] for d in self.devices]
        return hashlib.sha256(json.dumps(doc).encode()).hexdigest()[:16]

    def report(self, arch: Arch) -> list[dict]:
        """Per device: its table, predicted latency, budget and whether the latency meets it."""
        out = []
        for d in self.devices:
            ms = d.predictor.latency_ms(arch)
            out.append({"device": d.name, "lut": d.source, "predicted_ms": ms, "budget_ms": d.budget_ms,
                        "meets_budget": None if d.budget_ms is None else ms <= d.budget_ms * (1 + 1e-9),
                        **({"derived": d.predictor.derived} if d.predictor.derived else {})})
        return out
