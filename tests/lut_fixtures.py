"""Test fixture: latency tables made from hand-set numbers (latency proportional to an op's MACs),
complete for a space, so that search tests need no profiler. Real runs always take a profiled table."""

from __future__ import annotations

from hwnas.latency_tables import LatencyTable, Measurement, OpKey
from hwnas.profilers.session import op_module
from hwnas.core.summary import count_macs


def op_macs(op, space) -> int:
    return count_macs(op_module(op, space.build_config), op.input_shape())[0]


def mac_table(space, ms_per_mmac: float = 1.0, base_ms: float = 0.01, calibration: dict | None = None) -> LatencyTable:
    """A complete table for `space`: latency = base_ms + ms_per_mmac * MACs / 1e6 for every op."""
    table = LatencyTable(backend="test-macs", backend_options={}, device={"name": "fixture"},
                         spaces=[space.name], resolutions=[space.resolution], calibration=calibration)
    for op in space.all_ops():
        ms = base_ms + ms_per_mmac * op_macs(op, space) / 1e6
        table.put(OpKey.for_op(op, space.build_config.name),
                  Measurement(p10_ms=ms * 0.95, p50_ms=ms, p90_ms=ms * 1.05, mean_ms=ms, std_ms=ms * 0.02, count=10))
    return table
