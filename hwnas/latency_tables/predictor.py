"""Architecture -> predicted latency and memory, from a LUT plus a fitted calibration.

The raw prediction is the sum of the LUT's per-op medians (stem, blocks, head). A whole
network runs slower or faster than the sum of its parts (framework overhead between ops,
cache effects, fusions), so the raw sum is corrected by a calibration fitted on end-to-end
measurements (`hwnas calibrate`, see hwnas.latency_tables.calibration) and stored in the table.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch

from ..arch import Arch
from ..errors import LutError
from ..spaces import SKIP, LayerwiseSpace, SearchSpace
from .calibration import calibration_for
from .table import LatencyTable, OpKey


@dataclass(frozen=True)
class Prediction:
    """Predicted figures of one architecture. `latency_ms` is the calibrated one searches use."""

    latency_ms: float
    raw_sum_ms: float
    error_pct: float | None
    params: int
    peak_activation_bytes: int

    def to_dict(self) -> dict:
        return asdict(self)


class LatencyPredictor:
    """Predicts architectures of one space from one table; caches per-op lookups.

    Construction checks that every op the space can contain is in the table, so a search
    fails before it starts rather than in the middle.
    """

    def __init__(self, table: LatencyTable, space: SearchSpace, check_complete: bool = True):
        self.table = table
        self.space = space
        self.calibration = calibration_for(table.calibration, space.resolution)
        self._build = space.build_config.name
        self._cache: dict = {}
        if check_complete:
            missing = [op for op in space.all_ops() if self.key(op) not in table]
            if missing:
                raise LutError(
                    f"the table lacks {len(missing)} of the {len(space.all_ops())} ops of space {space.name!r} at "
                    f"{space.resolution}px, batch {table.batch} (first: {self.key(missing[0])}); fill it with "
                    f"`hwnas profile --space {space.name} --resolution {space.resolution} --backend {table.backend} "
                    f"--out TABLE --resume`"
                )

    def key(self, op) -> OpKey:
        return OpKey.for_op(op, self._build, batch=self.table.batch, dtype=self.table.dtype)

    def op_latency_ms(self, op) -> float:
        """Median latency of one op instance from the table (cached)."""
        cached = self._cache.get(op)
        if cached is None:
            cached = self.table.get(self.key(op)).p50_ms
            self._cache[op] = cached
        return cached

    def raw_sum_ms(self, arch: Arch) -> float:
        """Sum of the LUT medians of the stem, every block and the head."""
        return sum(self.op_latency_ms(op) for op in self.space.ops(arch.arch_def(self.space)))

    def n_ops(self, arch: Arch) -> int:
        """Ops of the network: stem, blocks, head (what the `ops` calibration counts)."""
        return len(self.space.ops(arch.arch_def(self.space)))

    def _calibrated(self, raw: float, n_ops: int) -> float:
        return self.calibration.apply(raw, n_ops) if self.calibration else raw

    def latency_ms(self, arch: Arch) -> float:
        """Calibrated latency (the raw sum where the table has no calibration)."""
        ops = self.space.ops(arch.arch_def(self.space))
        return self._calibrated(sum(self.op_latency_ms(op) for op in ops), len(ops))

    def predict(self, arch: Arch) -> Prediction:
        ops = self.space.ops(arch.arch_def(self.space))
        raw = sum(self.op_latency_ms(op) for op in ops)
        params, peak = self._memory(ops)
        return Prediction(
            latency_ms=self._calibrated(raw, len(ops)),
            raw_sum_ms=raw,
            error_pct=self.calibration.error_pct if self.calibration else None,
            params=params,
            peak_activation_bytes=peak,
        )

    def _memory(self, ops) -> tuple[int, int]:
        """Parameters and peak activation bytes (largest input+output pair of one op)."""
        params_bytes = 0
        peak = 0
        for op in ops:
            m = self.table.get(self.key(op))
            params_bytes += m.param_bytes
            peak = max(peak, m.input_bytes + m.output_bytes, m.peak_bytes or 0)
        bytes_per_param = 2 if self.table.dtype in ("float16", "bfloat16") else 4
        return params_bytes // bytes_per_param, peak

    # --- differentiable form for supernet search ------------------------------------------
    def layer_tables(self) -> tuple[float, list[torch.Tensor]]:
        """For a layer-wise space: the fixed latency (stem + head) and, per searchable layer, the
        latency of each candidate in the layer's candidate order (skip = 0), in ms."""
        if not isinstance(self.space, LayerwiseSpace):
            raise LutError(f"space {self.space.name!r} is not layer-wise; the differentiable latency needs one")
        stem = self.op_latency_ms(self.space.stem_op())
        (final_shape,) = self.space.final_shapes()
        head = self.op_latency_ms(self.space.head_op(*final_shape))
        per_layer = []
        for layer in self.space.layers:
            values = [0.0 if (op := layer.op(c)) is None else self.op_latency_ms(op) for c in layer.candidates]
            per_layer.append(torch.tensor(values, dtype=torch.float32))
        return stem + head, per_layer

    def _layer_ops(self) -> list[torch.Tensor]:
        """Per layer, 1.0 for each candidate that is an op and 0.0 for skip."""
        return [torch.tensor([0.0 if c == SKIP else 1.0 for c in layer.candidates]) for layer in self.space.layers]

    def layer_tables_cached(self) -> tuple[float, list[torch.Tensor]]:
        if "_layer_tables" not in self._cache:
            self._cache["_layer_tables"] = self.layer_tables()
            self._cache["_layer_ops"] = self._layer_ops()
        return self._cache["_layer_tables"]

    def expected_latency(self, probabilities: Sequence[torch.Tensor]) -> torch.Tensor:
        """Calibrated expected latency (ms) under per-layer probability vectors; differentiable."""
        fixed, per_layer = self.layer_tables_cached()
        if len(probabilities) != len(per_layer):
            raise LutError(f"expected {len(per_layer)} probability vectors, got {len(probabilities)}")
        raw = fixed + sum((p * lat.to(p.device)).sum() for p, lat in zip(probabilities, per_layer))
        if not self.calibration:
            return raw
        n_ops = 2 + sum((p * ops.to(p.device)).sum() for p, ops in zip(probabilities, self._cache["_layer_ops"]))
        return self.calibration.apply_tensor(raw, n_ops)

    def fastest_latency_ms(self) -> float:
        """Lowest predicted latency of any architecture of a layer-wise space."""
        fixed, per_layer = self.layer_tables_cached()
        a, c = (self.calibration.a, self.calibration.c) if self.calibration else (1.0, 0.0)
        best = sum(float((a * lat + c * ops).min()) for lat, ops in zip(per_layer, self._cache["_layer_ops"]))
        return a * fixed + 2 * c + best + (self.calibration.b if self.calibration else 0.0)

    def batch_latency_ms(self, archs: Sequence[Arch]) -> np.ndarray:
        """Calibrated latency of many architectures (thousands per second for evolution)."""
        return np.array([self.latency_ms(a) for a in archs], dtype=np.float64)
