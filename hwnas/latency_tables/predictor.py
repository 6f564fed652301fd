"""Architecture -> predicted latency and memory, from a LUT plus a fitted calibration.

The raw prediction is the sum of the LUT's per-op medians (stem, blocks, head). A whole
network runs slower or faster than the sum of its parts (framework overhead between ops,
cache effects, fusions), so the raw sum is corrected by a calibration fitted on end-to-end
measurements (`hwnas calibrate`, see hwnas.latency_tables.calibration) and stored in the table.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch

from ..core.arch import Arch
from ..errors import LutError
from ..core.spaces import LayerwiseSpace, SearchSpace
from . import fitted, published
from .calibration import calibration_for, op_category
from ..profilers.table import LatencyTable, Measurement, OpKey


@dataclass(frozen=True)
class Prediction:
    """Predicted figures of one architecture. `latency_ms` is the calibrated one searches use."""

    latency_ms: float
    raw_sum_ms: float
    error_pct: float | None
    params: int
    peak_activation_bytes: int
    coverage_note: str | None = None  # why error_pct is widened: the architecture is unlike the calibration's
    derived: str | None = None  # which op was derived rather than measured (a published table's head)

    def to_dict(self) -> dict:
        return asdict(self)


class LatencyPredictor:
    """Predicts architectures of one space from one table; caches per-op lookups.

    Construction checks that every op the space can contain is in the table, so a search
    fails before it starts rather than in the middle. On a published table, a head of another
    class count than the published one is derived (hwnas.latency_tables.published); `derived`
    says how, and every prediction carries that sentence.
    """

    def __init__(self, table: LatencyTable, space: SearchSpace, check_complete: bool = True):
        self.table = table
        self.space = space
        self.calibration = calibration_for(table.calibration, space.resolution)
        self._build = space.build_config.name
        self._cache: dict = {}
        self._derived: dict[str, Measurement] = {}
        self.derived: str | None = None
        if published.is_published(table):
            self._derive_heads()
        if check_complete:
            missing = [op for op in space.all_ops() if not self.has(op)]
            if missing and published.is_published(table):
                raise LutError(published.missing_ops(table, space, len(missing), self.key(missing[0])))
            if missing and fitted.is_fitted(table):
                raise LutError(fitted.missing_ops(table, space, self.key(missing[0])))
            if missing:
                classes = "" if space.num_classes == space.default_num_classes else f" --num-classes {space.num_classes}"
                raise LutError(
                    f"the table lacks {len(missing)} of the {len(space.all_ops())} ops of space {space.name!r} at "
                    f"{space.resolution}px, batch {table.batch} (first: {self.key(missing[0])}); fill it with "
                    f"`hwnas profile --space {space.name} --resolution {space.resolution}{classes} --backend "
                    f"{table.backend} --out TABLE --resume`"
                )

    def _derive_heads(self) -> None:
        notes = []
        for op in self.space.all_ops():
            key = self.key(op)
            if op.kind == "head" and key not in self.table and str(key) not in self._derived:
                derived = published.derived_head(self.table, op, self.space, key)
                if derived is not None:
                    self._derived[str(key)], note = derived
                    notes.append(note)
        self.derived = "; ".join(notes) or None

    def key(self, op) -> OpKey:
        return OpKey.for_op(op, self._build, batch=self.table.batch, dtype=self.table.dtype)

    def has(self, op) -> bool:
        """Whether the op is in the table or derived from it."""
        key = self.key(op)
        return key in self.table or str(key) in self._derived

    def measurement(self, op) -> Measurement:
        """The table's measurement of one op (or the derived one, see `derived`; cached)."""
        cached = self._cache.get(("measurement", op))
        if cached is None:
            key = self.key(op)
            cached = self._cache[("measurement", op)] = self._derived.get(str(key)) or self.table.get(key)
        return cached

    def op_latency_ms(self, op) -> float:
        """Median latency of one op instance from the table (cached)."""
        cached = self._cache.get(op)
        if cached is None:
            cached = self.measurement(op).p50_ms
            self._cache[op] = cached
        return cached

    def op_cost_ms(self, op) -> float:
        """The op's latency as the calibration weighs it (its category's scale x LUT median)."""
        key = ("cost", op)
        cached = self._cache.get(key)
        if cached is None:
            lat = self.op_latency_ms(op)
            cached = lat * self.calibration.scale_of(op_category(op)) if self.calibration else lat
            self._cache[key] = cached
        return cached

    def raw_sum_ms(self, arch: Arch) -> float:
        """Sum of the LUT medians of the stem, every block and the head."""
        return sum(self.op_latency_ms(op) for op in arch.ops(self.space))

    def n_ops(self, arch: Arch) -> int:
        """Ops of the network: stem, blocks, head (what the `ops` calibration counts)."""
        return len(arch.ops(self.space))

    def type_sums(self, arch: Arch) -> dict[str, float]:
        """Raw LUT latency summed per op category (what the `types` calibration weighs)."""
        sums: dict[str, float] = {}
        for op in arch.ops(self.space):
            category = op_category(op)
            sums[category] = sums.get(category, 0.0) + self.op_latency_ms(op)
        return sums

    task_head_offset_ms = 0.0

    def use_task_head(self, head_ms: float, derived: str | None = None) -> None:
        """Predict a task model from now on: the classifier head's cost replaced by `head_ms`, the
        measured cost of a detection or segmentation head (hwnas.transfer.latency.task_head_latency);
        `derived` says how, where that cost was derived rather than measured on the table's device."""
        (final_shape, *_) = sorted(self.space.final_shapes())
        self.task_head_offset_ms = float(head_ms) - self.op_cost_ms(self.space.head_op(*final_shape))
        self._cache.pop("_layer_tables", None)
        if derived:
            self.derived = f"{self.derived}; {derived}" if self.derived else derived

    def _calibrated(self, ops) -> float:
        if not self.calibration:
            return sum(self.op_latency_ms(op) for op in ops) + self.task_head_offset_ms
        return (sum(self.op_cost_ms(op) for op in ops) + self.calibration.c * len(ops) + self.calibration.b
                + self.task_head_offset_ms)

    def latency_ms(self, arch: Arch) -> float:
        """Calibrated latency (the raw sum where the table has no calibration)."""
        return self._calibrated(arch.ops(self.space))

    def predict(self, arch: Arch) -> Prediction:
        """Calibrated latency with its stated error, widened (and the reason given) for an
        architecture outside the range of raw sums or op mixes the calibration sampled."""
        ops = arch.ops(self.space)
        raw = sum(self.op_latency_ms(op) for op in ops)
        params, peak = self._memory(ops)
        error, note = None, None
        if self.calibration:
            note = self.calibration.coverage_issue(raw, self.type_sums(arch))
            error = self.calibration.widened_error_pct() if note else self.calibration.stated_error_pct
        return Prediction(
            latency_ms=self._calibrated(ops),
            raw_sum_ms=raw,
            error_pct=error,
            params=params,
            peak_activation_bytes=peak,
            coverage_note=note,
            derived=self.derived,
        )

    def _memory(self, ops) -> tuple[int, int]:
        """Parameters and peak activation bytes (largest input+output pair of one op)."""
        params_bytes = 0
        peak = 0
        for op in ops:
            m = self.measurement(op)
            params_bytes += m.param_bytes
            peak = max(peak, m.input_bytes + m.output_bytes, m.peak_bytes or 0)
        bytes_per_param = 2 if self.table.dtype in ("float16", "bfloat16") else 4
        return params_bytes // bytes_per_param, peak

    def fingerprint(self) -> str:
        """Hash of everything of the table that a search of this space sees (op latencies,
        calibration): part of a run's identity."""
        doc = {"ops": [self.op_latency_ms(op) for op in self.space.all_ops()],
               "calibration": self.calibration.fit_dict() if self.calibration else None}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def range_is_exact(self) -> bool:
        """Whether `latency_range` is exact (a layer-wise space) rather than sampled."""
        return isinstance(self.space, LayerwiseSpace)

    def latency_range(self, samples: int = 2000, seed: int = 0) -> tuple[float, float]:
        """Predicted latency of the fastest and the slowest architecture: exact for a layer-wise
        space (per-layer minima and maxima), else the extremes of `samples` uniform architectures
        (a stage-wise space has no per-layer costs; sampled extremes are inside the true range)."""
        if isinstance(self.space, LayerwiseSpace):
            fixed, per_layer = self.layer_costs()
            return fixed + float(sum(t.min() for t in per_layer)), fixed + float(sum(t.max() for t in per_layer))
        rng = random.Random(seed)
        lats = self.batch_latency_ms([Arch.create(self.space, self.space.sample(rng)) for _ in range(samples)])
        return float(lats.min()), float(lats.max())

    def smallest_memory(self) -> tuple[int, int] | None:
        """The fewest parameters and the lowest peak activation bytes of any architecture (each
        minimised on its own), exact where the space names its smallest network
        (`SearchSpace.minimal_choices`: layer-wise spaces, MobileNetV3/OFA); None for other spaces
        (a sampled minimum could refuse a budget that some architecture meets)."""
        fewest = self.space.minimal_choices(lambda op: self._memory([op])[0])
        lowest = self.space.minimal_choices(lambda op: self._memory([op])[1])
        if fewest is None or lowest is None:
            return None
        return self._memory(self.space.arch_ops(fewest))[0], self._memory(self.space.arch_ops(lowest))[1]

    # --- differentiable form for supernet search ------------------------------------------
    def _layer_tables(self, cost) -> tuple[float, list[torch.Tensor]]:
        if not isinstance(self.space, LayerwiseSpace):
            raise LutError(f"space {self.space.name!r} is not layer-wise; the differentiable latency needs one")
        (final_shape,) = self.space.final_shapes()
        fixed = cost(self.space.stem_op()) + cost(self.space.head_op(*final_shape))
        per_layer = []
        for layer in self.space.layers:
            values = [0.0 if (op := layer.op(c)) is None else cost(op) for c in layer.candidates]
            per_layer.append(torch.tensor(values, dtype=torch.float32))
        return fixed, per_layer

    def layer_tables(self) -> tuple[float, list[torch.Tensor]]:
        """For a layer-wise space: the fixed latency (stem + head) and, per searchable layer, the
        raw LUT latency of each candidate in the layer's candidate order (skip = 0), in ms."""
        return self._layer_tables(self.op_latency_ms)

    def _calibrated_layer_tables(self) -> tuple[float, list[torch.Tensor], list[torch.Tensor]]:
        """Like layer_tables but with each op weighed by its calibration scale, plus op counts."""
        if "_layer_tables" not in self._cache:
            fixed, per_layer = self._layer_tables(self.op_cost_ms)
            fixed += self.task_head_offset_ms
            ops = [torch.tensor([0.0 if layer.op(c) is None else 1.0 for c in layer.candidates])
                   for layer in self.space.layers]
            self._cache["_layer_tables"] = (fixed, per_layer, ops)
        return self._cache["_layer_tables"]

    def expected_latency(self, probabilities: Sequence[torch.Tensor]) -> torch.Tensor:
        """Calibrated expected latency (ms) under per-layer probability vectors; differentiable."""
        fixed, per_layer, layer_ops = self._calibrated_layer_tables()
        if len(probabilities) != len(per_layer):
            raise LutError(f"expected {len(per_layer)} probability vectors, got {len(probabilities)}")
        total = fixed + sum((p * lat.to(p.device)).sum() for p, lat in zip(probabilities, per_layer))
        if not self.calibration:
            return total
        n_ops = 2 + sum((p * ops.to(p.device)).sum() for p, ops in zip(probabilities, layer_ops))
        return total + self.calibration.c * n_ops + self.calibration.b

    def layer_costs(self) -> tuple[float, list[torch.Tensor]]:
        """Calibrated costs of a layer-wise space such that, for every architecture,
        latency_ms(arch) == fixed + sum over layers of costs[layer][chosen candidate]."""
        fixed, per_layer, layer_ops = self._calibrated_layer_tables()
        if not self.calibration:
            return fixed, per_layer
        c = self.calibration.c
        return fixed + 2 * c + self.calibration.b, [lat + c * ops for lat, ops in zip(per_layer, layer_ops)]

    def fastest_latency_ms(self) -> float:
        """Lowest predicted latency of any architecture of a layer-wise space."""
        fixed, costs = self.layer_costs()
        return fixed + sum(float(t.min()) for t in costs)

    def batch_latency_ms(self, archs: Sequence[Arch]) -> np.ndarray:
        """Calibrated latency of many architectures (thousands per second for evolution)."""
        return np.array([self.latency_ms(a) for a in archs], dtype=np.float64)
